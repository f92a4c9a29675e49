"""The one settings object shared by the CLI and the service (env prefix ``TUWEN_``)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.errors import TuwenError
from common.vocabulary import Backend, EncodePrecision

DEFAULT_HOME = Path("~/.tuwen")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUWEN_", extra="ignore")

    home: Path = DEFAULT_HOME
    database_url: str | None = None
    device: str | None = None
    # Query encoding in the service: "auto" = bf16 images / fp32 texts on CPUs with native bf16,
    # fp16 on CUDA. "bf16" also runs texts in bf16: ~2x faster single queries, cosine 0.9998 to fp32
    # but below the top-5 overlap bar in one bench run (bench/RESULTS.md).
    precision: EncodePrecision = "auto"
    # Inference backend for encoding (common.backend): auto = OpenVINO on x86 CPUs when installed,
    # PyTorch on CUDA unless ONNX Runtime's CUDA provider is there. int8 precision needs onnx|openvino.
    backend: Backend = "auto"
    # Concurrent text queries that miss the cache share one tower call (app/core/encoding.py): the
    # first waits up to this long for others, only while other queries are in flight.
    query_batch_window_ms: float = 2.0
    query_batch_max: int = 32
    max_upload_mb: float = 10.0
    max_query_chars: int = 1000
    api_key: str | None = None
    require_key_for_search: bool = False
    # Comma-separated in the environment: TUWEN_CORS_ORIGINS=https://a.example,https://b.example
    cors_origins: Annotated[list[str], NoDecode] = []

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'store.db'}"

    @property
    def weights_dir(self) -> Path:
        return self.home_dir / "weights"

    @property
    def index_dir(self) -> Path:
        return self.home_dir / "index"

    @property
    def converted_dir(self) -> Path:
        """Exported / converted towers (ONNX, OpenVINO IR), one folder per model id and format."""
        return self.home_dir / "converted"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def get_settings(home: str | Path | None = None) -> Settings:
    """Settings from the environment; ``home`` (the CLI's ``--home``) overrides ``TUWEN_HOME``.

    A bad value is the user's environment, not a bug: a ``TuwenError`` naming each variable."""
    try:
        return Settings(home=Path(home)) if home is not None else Settings()
    except ValidationError as exc:
        raise TuwenError("; ".join(_bad_variable(error) for error in exc.errors())) from None


def _bad_variable(error: dict) -> str:
    field = str(error["loc"][0]) if error.get("loc") else "?"
    return f"{Settings.model_config['env_prefix']}{field.upper()}={error.get('input')!r}: {error['msg']}"
