"""Response bodies of the API (pydantic models, shown in the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

RERANK_SCORE = "with rerank qb-norm: the QB-Norm score the results are ordered by (null past its depth)"


class ImageHit(BaseModel):
    image_id: str
    score: float = Field(description="cosine similarity, higher is closer")
    url: str = Field(description="path of the image bytes (GET)")
    rerank_score: float | None = Field(None, description=RERANK_SCORE)


class TextHit(BaseModel):
    text_id: str
    caption: str
    score: float
    rerank_score: float | None = Field(None, description=RERANK_SCORE)


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


class StoreState(BaseModel):
    state: str = Field(description="ready | degraded (unreachable: searches answer, writes get 503)")
    reason: str | None = None
    down_for_s: float | None = None
    outages: int = 0


class Ready(BaseModel):
    status: str = Field(
        description="ready, or degraded while the store is unreachable (searches still answer)"
    )
    generation: str | None = Field(description="the competition index generation, None without one")
    model_id: str | None
    corpora: dict[str, str] = Field(default_factory=dict, description="served corpus -> its generation")
    store: StoreState


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
    store: dict[str, int] = Field(description="row counts, as last read (kept through a store outage)")
    store_state: StoreState
    corpora: dict[str, str] = Field(default_factory=dict, description="served corpus -> its generation")
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


# --- Collections (issue 18): every encoded corpus, and the competition's candidate sets --------


class CorpusOut(BaseModel):
    name: str
    rows: int
    encoded: bool = Field(description="searchable now: encoded, and its items unchanged since")
    stale: str | None = Field(None, description="why not searchable, with the command to run")
    model_id: str | None
    generation: str | None = None
    builtin: bool = False
    targets: list[str] = Field(default_factory=list, description="what it can search: image, text")
    fields: dict[str, str] = Field(description='attribute -> "int" | "float" | "str"')
    time_kind: str | None = None
    time_range: list[str | int] | None = None
    values: dict[str, list[str]] = Field(
        default_factory=dict, description="the values of each str field that has few (for a select)"
    )
    counts: dict[str, int] = Field(default_factory=dict, description="vectors per target")


class CorpusSearchIn(BaseModel):
    """A text query ``q`` or an item ``item`` ("more like this"), and where to look."""

    model_config = ConfigDict(extra="forbid")

    q: str | None = Field(None, description="the query text (Chinese)")
    item: str | None = Field(None, description="an item id: its nearest neighbours, itself left out")
    k: int = Field(10, description="1..100")
    offset: int = Field(0, description="0..10000: the page starts here (next_offset of the last answer)")
    target: str | None = Field(None, description="image | text: search the images or the captions")
    where: dict[str, Any] | None = Field(
        None,
        description='all must hold: {"category": "连衣裙", "price": {"gte": 100, "lt": 300}, '
        '"time": {"gte": "2024-03-01"}}; ops eq ne gt gte lt lte in nin',
    )
    rerank: str = Field(
        "none",
        description="none | qb-norm: QB-Norm with the generation's query bank (a text query against "
        "the images); the plain ranking's first 1,000 re-ranked, then paged",
    )


class CorpusHit(BaseModel):
    id: str
    score: float = Field(description="cosine similarity, higher is closer")
    caption: str | None
    image_url: str | None = Field(description="path of the image bytes (GET), None without an image")
    time: str | int | None
    attributes: dict[str, int | float | str | None]
    rerank_score: float | None = Field(None, description=RERANK_SCORE)


class CorpusSearchOut(BaseModel):
    corpus: str
    generation: str
    target: str
    results: list[CorpusHit]
    next_offset: int | None = Field(description="offset of the next page; null on the last one")
    total: int = Field(description="items that pass the filter")
    plan: str = Field(description="how it was searched (index, filtered-index, brute)")
    rerank: str = Field("none", description="the re-ranking applied: none | qb-norm")


class CorpusItemOut(BaseModel):
    corpus: str
    id: str
    caption: str | None
    image_url: str | None
    time: str | int | None
    attributes: dict[str, int | float | str | None]


class SearchInputError(BaseModel):
    """422 of a collection search: the field at fault and the corpus's fields (or FastAPI's list
    of field errors for a body that is not even the right shape)."""

    detail: str | list[FieldError]
    field: str | None = None
    message: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
