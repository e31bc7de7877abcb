"""Reading a request's images: multipart file fields, base64 JSON or one raw ``image/*`` body, as
:class:`~discopatch.monitoring.streams.Item` s (whole-request problems raise HTTP 4xx, per-image ones become errors)."""

from __future__ import annotations

import base64
import binascii
import io

from fastapi import HTTPException, Request
from PIL import Image
from starlette.datastructures import UploadFile

from .streams import Item


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
        try:
            form = await request.form(max_files=max_images + 1, max_fields=max_images + 16)
        except HTTPException:
            raise
        except Exception as e:
            raise HTTPException(400, f"malformed multipart body: {e}") from None
        try:
            entries = form.getlist("images")
            ids = form.getlist("source_id")
            if len(entries) > max_images:
                raise HTTPException(413, f"{len(entries)} images in one request; the limit is {max_images}")
            for i, f in enumerate(entries):
                part_id = ids[i] if i < len(ids) else None
                given = part_id if isinstance(part_id, str) else None
                if not isinstance(f, UploadFile):  # no filename parameter: Starlette reads the part as text
                    sid = given or f"images[{i}]"
                    items.append(
                        Item(
                            sid,
                            error=f"{sid}: this 'images' part has no filename, so it arrived as a text field; give "
                            "every image part a filename (some clients drop an empty one) or send base64 JSON",
                        )
                    )
                    continue
                sid = given or f.filename or f"images[{i}]"
                data = await f.read(max_image_bytes + 1)
                if len(data) > max_image_bytes:
                    items.append(Item(sid, error=f"{sid}: larger than the {max_image_bytes}-byte limit"))
                else:
                    items.append(Item(sid, data=data))
        finally:
            await form.close()
    elif ctype == "application/json" or ctype.endswith("+json"):
        try:
            body = await request.json()
        except ValueError as e:
            raise HTTPException(400, f"body is not valid JSON: {e}") from None
        except RecursionError:
            raise HTTPException(400, "body is not valid JSON: nested too deeply") from None
        if not isinstance(body, dict) or not isinstance(body.get("images"), list):
            raise HTTPException(422, 'expected a JSON object {"images": ["<base64>", ...]}')
        entries = body["images"]
        ids = body.get("source_ids") or []
        if not isinstance(ids, list):
            raise HTTPException(422, "source_ids must be a list of strings")
        if len(entries) > max_images:
            raise HTTPException(413, f"{len(entries)} images in one request; the limit is {max_images}")
        for i, entry in enumerate(entries):
            sid = str(ids[i]) if i < len(ids) and ids[i] is not None else f"images[{i}]"
            if isinstance(entry, dict) and isinstance(entry.get("data"), str):
                items.append(_b64(entry["data"], str(entry.get("source_id") or sid), max_image_bytes))
            elif isinstance(entry, str):
                items.append(_b64(entry, sid, max_image_bytes))
            else:
                items.append(Item(sid, error=f"{sid}: expected a base64 string, got {type(entry).__name__}"))
    else:
        raise HTTPException(
            415, "send multipart/form-data with 'images' file fields, application/json, or one raw image/* body"
        )
    if not items:
        raise HTTPException(422, "no images in the request (multipart field or JSON key 'images')")
    return items
