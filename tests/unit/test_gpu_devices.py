"""scripts/gpu_devices.sh: the devices `make up` pins its GPU workers to, with MIG and CUDA_VISIBLE_DEVICES."""

import os
import subprocess

from shared.settings import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu_devices.sh"
LISTING = """GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)
  MIG 1g.5gb      Device  0: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f)
  MIG 1g.5gb      Device  1: (UUID: MIG-cba663e8-9bed-5b25-b243-5985ef7c9beb)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-11111111-2222-3333-4444-555555555555)
GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-66666666-7777-8888-9999-000000000000)
"""


def devices(tmp_path, listing: str | None, **env: str) -> list[str]:
    environment = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"} | env
    if listing is not None:
        fake = tmp_path / "nvidia-smi"
        fake.write_text(f"#!/bin/sh\ncat <<'OUT'\n{listing}OUT\n")
        fake.chmod(0o755)
        environment["NVIDIA_SMI"] = str(fake)
    else:
        environment["NVIDIA_SMI"] = str(tmp_path / "missing-nvidia-smi")
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=environment, check=True)
    return result.stdout.split()


def test_each_mig_instance_is_a_device_and_a_split_gpu_is_not(tmp_path):
    assert devices(tmp_path, LISTING) == [
        "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f",
        "MIG-cba663e8-9bed-5b25-b243-5985ef7c9beb",
        "1",
        "2",
    ]


def test_cuda_visible_devices_is_the_list_when_set(tmp_path):
    assert devices(tmp_path, LISTING, CUDA_VISIBLE_DEVICES="2, MIG-abc") == ["2", "MIG-abc"]
    assert devices(tmp_path, LISTING, CUDA_VISIBLE_DEVICES="") == []
    assert devices(tmp_path, LISTING, CUDA_VISIBLE_DEVICES="-1") == []


def test_a_host_without_nvidia_smi_has_no_gpu_whatever_cuda_visible_devices_says(tmp_path):
    assert devices(tmp_path, None) == []
    assert devices(tmp_path, None, CUDA_VISIBLE_DEVICES="0,1") == []
