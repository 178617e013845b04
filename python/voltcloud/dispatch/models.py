"""Tables of the mobile workforce."""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class MobileUnit(SQLModel, table=True):
    """A charging van, a valet specialist or a maintenance engineer, employed by an operator."""

    id: str = Field(primary_key=True, max_length=64)
    operator_id: str = Field(foreign_key="operator.id", index=True, max_length=64)
    kind: int = Field(description="1 van, 2 specialist, 3 engineer")
    name: str = Field(max_length=200)
    lat: float
    lng: float
    energy_wh: int = Field(default=0, ge=0, description="Energy on board (vans)")
    connector_mask: int = Field(default=0)
    skills: int = Field(default=0, description="Skill bitmask (engineers)")
    shift_start_s: int = Field(ge=0, le=86400, description="Seconds after local midnight")
    shift_end_s: int = Field(ge=0, le=2 * 86400)
    status: int = Field(default=1)
    version: int = Field(default=1)
