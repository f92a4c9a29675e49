"""Contrastive fine-tuning and evaluation of Chinese-CLIP. Never imported by the service."""
