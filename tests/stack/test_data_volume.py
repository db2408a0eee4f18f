"""The data_volume role on a real block device (a loop device standing in for the Cinder volume
Chameleon attaches): a blank volume gets a filesystem and the data folders are bound into it;
a second run changes nothing; after the mounts are gone (a new instance), the next run finds
the data again and formats nothing."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from stackenv import ANSIBLE_DIR, ANSIBLE_VENV, run, tail

LOCAL = ANSIBLE_DIR / "inventories" / "local" / "hosts.yml"
PLAY = """
- name: Data volume
  hosts: localhost
  gather_facts: false
  roles:
    - role: data_volume
"""

pytestmark = pytest.mark.skipif(shutil.which("losetup") is None, reason="needs losetup")


@pytest.fixture
def volume(tmp_path):
    image = tmp_path / "volume.img"
    with image.open("wb") as f:
        f.truncate(64 << 20)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    yield device
    subprocess.run(["losetup", "--detach", device], capture_output=True)


def test_the_data_folders_live_on_the_volume_and_survive_a_new_instance(tmp_path, volume):
    mount, folders = tmp_path / "mnt", [tmp_path / "postgresql", tmp_path / "seaweedfs"]
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    settings = json.dumps({
        "data_volume_id": "3c1e2f7a-5b6d-4e8f-9a0b-1c2d3e4f5a6b",
        "data_volume_device": volume,
        "data_volume_mount": str(mount),
        "data_volume_folders": [str(f) for f in folders],
        "data_volume_wait_s": 5,
    })  # fmt: skip
    playbook = [str(ANSIBLE_VENV / "bin" / "ansible-playbook"), "-i", str(LOCAL), str(play),
                "-e", settings]  # fmt: skip
    mounts = [*folders, mount]

    def unmount() -> None:
        for path in mounts:
            subprocess.run(["umount", str(path)], capture_output=True)

    try:
        first = run(playbook)
        assert first.returncode == 0, tail(first)
        (folders[0] / "PG_VERSION").write_text("15\n")
        stored = mount / folders[0].relative_to("/").as_posix().replace("/", "-") / "PG_VERSION"
        assert stored.read_text() == "15\n"  # written through the bind, kept on the volume

        second = run(playbook)
        assert second.returncode == 0, tail(second)
        assert "changed=0" in second.stdout, tail(second)

        unmount()  # the instance is replaced: the volume comes back with its data
        assert not (folders[0] / "PG_VERSION").exists()
        third = run(playbook)
        assert third.returncode == 0, tail(third)
        assert (folders[0] / "PG_VERSION").read_text() == "15\n"
    finally:
        unmount()
        for path in mounts:  # the fstab lines the role wrote
            subprocess.run(
                [str(ANSIBLE_VENV / "bin" / "ansible"), "localhost", "-i", str(LOCAL),
                 "-m", "ansible.posix.mount", "-a", f"path={path} state=absent"],
                capture_output=True, env={"ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg")},
            )  # fmt: skip
