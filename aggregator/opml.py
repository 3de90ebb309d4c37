"""OPML in (listparser) and out (OPML 2.0, written with the stdlib's ElementTree)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from email.utils import format_datetime

import listparser
import msgspec

from .errors import OPMLError
from .models import Feed


class OPMLFeed(msgspec.Struct, frozen=True):
    url: str
    title: str | None


def read_opml(data: bytes) -> list[OPMLFeed]:
    result = listparser.parse(data)
    if result.get("bozo") and not result.feeds:
        raise OPMLError(f"not a readable OPML file: {result.get('bozo_exception')}")
    if not result.feeds and not result.lists:
        raise OPMLError("the OPML file lists no feeds (no <outline xmlUrl=...>)")
    return [OPMLFeed(url=f.url.strip(), title=(f.title or None)) for f in result.feeds if f.url]


def write_opml(feeds: list[Feed], now: datetime) -> str:
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = "aggregator subscriptions"
    ET.SubElement(head, "dateCreated").text = format_datetime(now, usegmt=True)
    body = ET.SubElement(root, "body")
    for f in feeds:
        attrs = {"type": "rss", "text": f.display_title, "title": f.display_title, "xmlUrl": f.url}
        if f.site_url:
            attrs["htmlUrl"] = f.site_url
        ET.SubElement(body, "outline", attrs)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
