"""All API routers in one."""

from fastapi import APIRouter

from app.api.routes import admin, analysis, corpora, corpus_writes, export, health, images, search

api_router = APIRouter()
for module in (health, search, corpora, corpus_writes, images, export, admin, analysis):
    api_router.include_router(module.router)
