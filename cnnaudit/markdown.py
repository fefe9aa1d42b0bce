"""Untrusted text as inert Markdown, for the gate's Markdown output and the model card."""

from __future__ import annotations

MD_SPECIAL = "\\`*_{}[]()#+-.!|~>"
# inline only: emphasis, code, links, images, table cells; for text that never starts a line (the model card)
MD_INLINE = "\\`*_[]|~"


def escape(text, special: str = MD_SPECIAL) -> str:
    """Untrusted text (paths, class names, rule names) as inert Markdown: HTML escaped, every `special`
    character backslash-escaped (by default all Markdown punctuation: no links, images, emphasis or table
    breaks, wherever the text lands), @ as an entity (no mentions), one line."""
    import html
    out = html.escape(" ".join(str(text).split()), quote=False)
    return "".join("\\" + ch if ch in special else ch for ch in out).replace("@", "&#64;")
