"""stack/chameleon/terraform.py with the real Terraform binary, on a provider-free module of
the test's own (infra/ needs the OpenStack provider and a cloud): tfvars 0600, the state in the
stack's folder and never in the module's, `output -json` parsed, destroy emptying the state."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from core.errors import UserError
from stack.chameleon import terraform as tf

MODULE = """
variable "stack_name" { type = string }
variable "gpu_count" { type = number }
resource "terraform_data" "this" { input = var.stack_name }
output "gateway_address" { value = "203.0.113.5" }
output "hosts" {
  value = { for n in range(var.gpu_count) : "${var.stack_name}-gpu-${n + 1}" => {
    private_address = "10.52.0.${20 + n}", role = "worker" } }
}
"""

pytestmark = pytest.mark.skipif(not shutil.which("terraform"), reason="no terraform on PATH")


def test_apply_output_destroy_keep_the_state_in_the_stack_folder(tmp_path, monkeypatch):
    source = tmp_path / "module"
    source.mkdir()
    (source / "main.tf").write_text(MODULE)
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(tmp_path / "no.tfrc"))  # nothing of the user's
    module = tf.Module("infra", source, tmp_path / "stack" / "terraform" / "infra")
    log = tmp_path / "terraform.log"
    env = dict(os.environ)

    tf.write_tfvars(module, {"stack_name": "s1", "gpu_count": 2})
    assert stat.S_IMODE(module.tfvars.stat().st_mode) == 0o600
    tf.run(module, "apply", env, log)

    assert module.has_state() and not (source / "terraform.tfstate").exists()
    assert not (source / ".terraform").exists()  # plugins in the stack's folder too
    outputs = tf.output(module, env)
    assert outputs["gateway_address"] == "203.0.113.5"
    assert outputs["hosts"] == {
        "s1-gpu-1": {"private_address": "10.52.0.20", "role": "worker"},
        "s1-gpu-2": {"private_address": "10.52.0.21", "role": "worker"},
    }
    assert "$ terraform -chdir=" in log.read_text()  # the commands are in the log

    tf.run(module, "destroy", env, log)
    assert not module.has_state()


def test_a_failing_apply_is_one_line_with_the_log(tmp_path):
    source = tmp_path / "module"
    source.mkdir()
    (source / "main.tf").write_text('variable "x" { type = number }\n')
    module = tf.Module("infra", source, tmp_path / "stack" / "terraform" / "infra")
    tf.write_tfvars(module, {"x": "not a number"})
    with pytest.raises(UserError, match=r"terraform apply of infra failed .*`make up` again"):
        tf.run(module, "apply", dict(os.environ), tmp_path / "tf.log")
