"""The client that test_tus.py kills: a plain tuspy upload with URL storage.

Usage: python _tuspy_child.py TUS_URL TOKEN FILE STORAGE_JSON DEST_PATH

Prints `URL <upload url>` once the upload exists (it is also in the tuspy
FileStorage), then `OFFSET <n>` after every chunk, then `DONE`. It pauses a
little between chunks so the parent can SIGKILL it half-way.
"""

import os
import sys
import time

from tusclient import client
from tusclient.storage.filestorage import FileStorage

CHUNK = 5 * 1024 * 1024


def main():
    tus_url, token, path, storage_path, dest = sys.argv[1:6]
    c = client.TusClient(tus_url, headers={"Authorization": f"Bearer {token}"})
    uploader = c.uploader(
        file_path=path,
        chunk_size=CHUNK,
        metadata={"filename": os.path.basename(dest), "path": dest},
        store_url=True,
        url_storage=FileStorage(storage_path),
        upload_checksum=True,  # sha1 per chunk
        # The parent's HEAD polls may take the upload's lock over from a
        # PATCH in flight (that PATCH then fails): retry from the true offset.
        retries=20,
        retry_delay=0.2,
    )
    if not uploader.url:
        uploader.set_url(uploader.create_url())  # stores the URL in FileStorage
        uploader.offset = 0
    print("URL", uploader.url, flush=True)
    size = uploader.get_file_size()
    while uploader.offset < size:
        uploader.upload_chunk()
        print("OFFSET", uploader.offset, flush=True)
        time.sleep(0.3)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
