"""Install the Ansible collections the roles use into an Ansible environment, from the
`ansible` package's release wheel (which bundles them) instead of the whole package (~470 MB of
collections the roles never use) or Ansible Galaxy (which a machine may not reach).

    <ansible venv>/bin/python tools/ansible_collections.py ansible/collections.txt

The file names the release (`ansible==X.Y.Z`) and the collections (`namespace.name`), one per
line. A collection already installed from the same release is left alone."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path


def read(listing: Path) -> tuple[str, list[str]]:
    lines = [line.split("#")[0].strip() for line in listing.read_text().splitlines()]
    lines = [line for line in lines if line]
    release = [line for line in lines if line.startswith("ansible==")]
    if len(release) != 1:
        sys.exit(f"error: {listing} must name one release as ansible==X.Y.Z")
    return release[0], [line for line in lines if line != release[0]]


def main(listing: Path) -> None:
    release, collections = read(listing)
    target = Path(sysconfig.get_paths()["purelib"])
    stamp = target / "ansible_collections" / ".from-release"
    wanted = f"{release} {' '.join(sorted(collections))}\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, release],
            check=True,
        )
        (wheel,) = Path(tmp).glob("ansible-*.whl")
        prefixes = tuple(f"ansible_collections/{c.replace('.', '/')}/" for c in collections)
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.startswith(prefixes)]
            for prefix in prefixes:
                if not any(m.startswith(prefix) for m in members):
                    sys.exit(f"error: {release} holds no collection {prefix.split('/', 1)[1]}")
            archive.extractall(target, members)
    stamp.write_text(wanted)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
