"""Reading a request's images: multipart file fields, base64 JSON or one raw ``image/*`` body, as
:class:`~discopatch.monitoring.scoring.Item` s (whole-request problems raise HTTP 4xx, per-image ones become errors)."""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from PIL import Image
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from .scoring import Item


def _b64(entry: str, sid: str, max_bytes: int) -> Item:
    s = entry.strip()
    if s.startswith("data:") and "," in s:
        s = s.split(",", 1)[1]
    if len(s) * 3 // 4 > max_bytes:
        return Item(sid, error=f"{sid}: larger than the {max_bytes}-byte limit")
    try:
        return Item(sid, data=base64.b64decode(s, validate=True))
    except (binascii.Error, ValueError) as e:
        return Item(sid, error=f"{sid}: not valid base64 ({e})")


#: Raw ``image/*`` request bodies the server accepts, with the format Pillow reports for each.
IMAGE_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}


async def read_raw_image(request: Request, ctype: str, source_id: str | None, max_image_bytes: int) -> Item:
    """A raw ``image/*`` body as one :class:`Item`: 415 for a type not in :data:`IMAGE_TYPES`, 413 over the per-image
    limit; data that is another format than the declared type becomes the image's error."""
    if ctype not in IMAGE_TYPES:
        raise HTTPException(415, f"{ctype} is not accepted; raw image bodies may be {', '.join(IMAGE_TYPES)}")
    sid = source_id or "image"
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > max_image_bytes:
            raise HTTPException(413, f"image larger than the {max_image_bytes}-byte limit")
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            found = img.format
    except (OSError, ValueError, Image.DecompressionBombError):
        found = None  # undecodable: the scorer reports why
    if found is not None and found != IMAGE_TYPES[ctype]:
        return Item(sid, error=f"{sid}: sent as {ctype} but the data is {found}")
    return Item(sid, data=bytes(data))


#: A JSON string literal (the unrolled form, fast on a 48 MB base64 string); cut out before counting elements.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def json_element_limit(max_images: int) -> int:
    """Containers, keys and list items a JSON request may hold: a request at the image limit, every image as an
    object with its source id and a ``source_ids`` list as well, has about 6 per image; twice that, plus a margin."""
    return 12 * max_images + 64


def parse_json_body(raw: bytes, max_images: int) -> Any:
    """The parsed body, after counting its elements on the raw bytes (strings cut out), so that a body of tiny
    objects (``[{}, {}, ...]``: 2 bytes each, ~70 bytes each once parsed) is refused before it is built. Runs in a
    worker thread: parsing 64 MB takes long enough to stall every other request on the event loop."""
    skeleton = _JSON_STRING.sub(b'""', raw)
    n = sum(skeleton.count(c) for c in (b",", b":", b"{", b"["))
    limit = json_element_limit(max_images)
    if n > limit:
        raise HTTPException(
            413, f"JSON body with about {n} elements; at most {limit} are accepted ({max_images} images per request)"
        )
    try:
        return json.loads(raw)
    except ValueError as e:  # JSONDecodeError, bad UTF-8, an integer of too many digits
        raise HTTPException(400, f"body is not valid JSON: {e}") from None
    except RecursionError:
        raise HTTPException(400, "body is not valid JSON: nested too deeply") from None


def json_items(body: Any, max_images: int, max_image_bytes: int) -> list[Item]:
    """The images of a parsed JSON body. Its structure is checked as documented (422): ``images`` a list of base64
    strings or ``{"data": "<base64>", "source_id": ...}`` objects, ``source_ids`` strings or nulls; what is inside
    a string (bad base64, not an image) becomes that image's error."""
    if not isinstance(body, dict) or not isinstance(body.get("images"), list):
        raise HTTPException(422, 'expected a JSON object {"images": ["<base64>", ...]}')
    entries = body["images"]
    ids = body.get("source_ids")
    ids = [] if ids is None else ids
    if not isinstance(ids, list) or not all(i is None or isinstance(i, str) for i in ids):
        raise HTTPException(422, "source_ids must be a list of strings (or nulls)")
    if len(entries) > max_images:
        raise HTTPException(413, f"{len(entries)} images in one request; the limit is {max_images}")
    items = []
    for i, entry in enumerate(entries):
        sid = ids[i] if i < len(ids) and ids[i] is not None else f"images[{i}]"
        if isinstance(entry, str):
            items.append(_b64(entry, sid, max_image_bytes))
        elif isinstance(entry, dict) and isinstance(entry.get("data"), str):
            given = entry.get("source_id")
            if given is not None and not isinstance(given, str):
                raise HTTPException(422, f"images[{i}].source_id must be a string")
            items.append(_b64(entry["data"], given or sid, max_image_bytes))
        else:
            raise HTTPException(
                422, f'images[{i}] is {type(entry).__name__}: expected a base64 string or {{"data": "<base64>"}}'
            )
    return items


async def read_form(request: Request, max_images: int) -> FormData:
    """The multipart form, refused (400) when the body ends without the closing boundary: the last part was cut
    off in transit, and Starlette's parser would silently drop it."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary", b"")
    closing = b"--" + boundary + b"--"
    tail = b""

    async def stream() -> AsyncGenerator[bytes, None]:
        nonlocal tail
        async for chunk in request.stream():
            tail = (tail + chunk)[-(len(closing) + 512) :]
            yield chunk

    parser = MultiPartParser(request.headers, stream(), max_files=max_images + 1, max_fields=max_images + 16)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise HTTPException(400, f"malformed multipart body: {e.message}") from None
    except HTTPException:
        raise
    except Exception as e:
        raise HTTPException(400, f"malformed multipart body: {e}") from None
    if not boundary or closing not in tail:
        await form.close()
        raise HTTPException(
            400, "multipart body ends without its closing boundary: the last part was cut off; send the whole body"
        )
    return form


async def read_items(
    request: Request, max_images: int, max_image_bytes: int, source_id: str | None = None
) -> list[Item]:
    """The request's images as :class:`Item` s; whole-request problems raise HTTP 4xx, per-image ones become errors.

    ``source_id`` names a raw ``image/*`` body (one image per request)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith("image/"):
        return [await read_raw_image(request, ctype, source_id, max_image_bytes)]
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_images * max_image_bytes:
        raise HTTPException(413, f"request body larger than {max_images * max_image_bytes} bytes")
    items: list[Item] = []
    if ctype == "multipart/form-data":
        form = await read_form(request, max_images)
        try:
            entries = form.getlist("images")
            ids = form.getlist("source_id")
            if len(entries) > max_images:
                raise HTTPException(413, f"{len(entries)} images in one request; the limit is {max_images}")
            for i, f in enumerate(entries):
                part_id = ids[i] if i < len(ids) else None
                given = part_id if isinstance(part_id, str) else None
                if not isinstance(f, UploadFile):  # no filename parameter: Starlette reads the part as text
                    raise HTTPException(
                        422,
                        f"images[{i}]: this 'images' part has no filename, so it arrived as a text field; give "
                        "every image part a filename (some clients drop an empty one) or send base64 JSON",
                    )
                sid = given or f.filename or f"images[{i}]"
                data = await f.read(max_image_bytes + 1)
                if len(data) > max_image_bytes:
                    items.append(Item(sid, error=f"{sid}: larger than the {max_image_bytes}-byte limit"))
                else:
                    items.append(Item(sid, data=data))
        finally:
            await form.close()
    elif ctype == "application/json" or ctype.endswith("+json"):
        raw = await request.body()  # bounded by the BodyLimit middleware
        body = await run_in_threadpool(parse_json_body, raw, max_images)
        items = json_items(body, max_images, max_image_bytes)
    else:
        raise HTTPException(
            415, "send multipart/form-data with 'images' file fields, application/json, or one raw image/* body"
        )
    if not items:
        raise HTTPException(422, "no images in the request (multipart field or JSON key 'images')")
    return items
