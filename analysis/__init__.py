"""Studies of a captioned-image corpus from its stored embeddings (``tuwen analyze …``).

Sits beside ``app`` and ``training``: reads corpora and their embeddings through ``indexer``, writes
reports (JSON, tables, figures, ``index.html``) that the service only lists and serves as files.
"""
