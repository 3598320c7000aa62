from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from server.models.base import Base


class RateCounter(Base):
    """One window of a rate limit's count (see server.services.limits).

    ``key`` names the limit and whom it counts (``submit:<user id>``,
    ``login:address:<ip>``, ...); ``window_start`` and ``expires_at`` are Unix
    seconds. Rows past ``expires_at`` are deleted now and then.
    """

    __tablename__ = "rate_counters"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    count: Mapped[int]
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
