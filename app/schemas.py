"""Response bodies of the API (pydantic models, shown in the OpenAPI schema at /docs)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ImageHit(BaseModel):
    image_id: str
    score: float = Field(description="cosine similarity, higher is closer")
    url: str = Field(description="path of the image bytes (GET)")


class TextHit(BaseModel):
    text_id: str
    caption: str
    score: float


class TextSearchOut(BaseModel):
    query: str
    generation: str = Field(description="index generation that answered")
    results: list[ImageHit]


class ImageToTextOut(BaseModel):
    generation: str
    results: list[TextHit]


class ImageToImageOut(BaseModel):
    generation: str
    results: list[ImageHit]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    generation: str
    model_id: str


class ModelInfo(BaseModel):
    spec: str
    model_id: str
    arch: str
    device: str
    precision: str


class IndexInfo(BaseModel):
    generation: str
    built_at: str = Field(description="ISO 8601, UTC")
    loaded_at: str
    index_types: dict[str, str]
    counts: dict[str, int]


class Stats(BaseModel):
    ready: bool
    store: dict[str, int]
    model: ModelInfo | None
    index: IndexInfo | None
    text_cache: dict[str, int] | None
    reload_error: str | None = None
    loading: bool = False  # a newly published generation is loading; the live one still serves


class ReloadOut(BaseModel):
    swapped: bool
    generation: str | None
    model_id: str | None


class ErrorOut(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class InvalidInputOut(BaseModel):
    """422: a message from the service's own checks, or FastAPI's list of field errors."""

    detail: str | list[FieldError]
