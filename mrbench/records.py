"""Record types that flow through the curation stages: one image (:class:`ImageRecord`) and one group of them
(:class:`Group`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Status values shared by every stage. Failures carry a named reason in `status` and detail in `error_message`.
STATUS_OK = "ok"
SPLITS = ("held_out", "held_in", "train")  # a group's split (ImageRecord.split), in the order shown everywhere


@dataclass(slots=True)
class ImageRecord:
    """One image candidate, from ingest to release.

    Attributes:
        id: Assigned once at ingest (stable hash of the source url) and never reused.
        url: Source URL (or ``file://`` path for local folders).
        caption: Caption text from the metadata.
        tags: Canonical tag names matched in the caption.
        category: Category of the first matched tag (celebrity, character, style, subject).
        group: Group id, set by the grouping step.
        split: ``train``, ``held_in`` or ``held_out`` (the split of the image's group), set by the split step.
        role: ``target`` or ``reference`` within the group, set by the grouping step.
        image: Encoded image bytes once downloaded.
        width: Pixel width of ``image``.
        height: Pixel height of ``image``.
        sha256: Hex digest of ``image``.
        status: ``ok`` or a named failure reason.
        error_message: Detail for a failure, empty when ok.
        metadata: Free-form extra fields (source file, row, original size...).
    """

    id: str
    url: str
    caption: str = ""
    tags: list[str] = field(default_factory=list)
    category: str = ""
    group: str = ""
    split: str = ""
    role: str = ""
    image: bytes | None = None
    width: int = 0
    height: int = 0
    sha256: str = ""
    status: str = STATUS_OK
    error_message: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def fail(self, reason: str, message: str = "") -> "ImageRecord":
        """Mark this record failed with a named reason; returns self for chaining."""
        self.status = reason
        self.error_message = message
        return self

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "ImageRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in row.items() if k in names}
        if kwargs.get("tags") is None:
            kwargs["tags"] = []
        else:
            kwargs["tags"] = list(kwargs["tags"])
        if kwargs.get("metadata") is None:
            kwargs["metadata"] = {}
        return cls(**kwargs)


@dataclass
class Group:
    """A set of images sharing a subject, style or identity; ``members`` ordered by seeded rank."""

    group_id: str
    tag: str
    category: str
    members: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return self.members[0]

    @property
    def references(self) -> list[str]:
        return self.members[1:]
