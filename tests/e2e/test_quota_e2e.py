"""Quota preflight against a real ResourceQuota like a Datalab's `medium` budget."""

MEDIUM = """
apiVersion: v1
kind: ResourceQuota
metadata: {name: medium}
spec:
  hard: {limits.cpu: "2", limits.memory: 2Gi, services: "10", secrets: "25", persistentvolumeclaims: "6"}
"""


def test_a_plan_over_the_quota_is_refused_before_any_write(session):
    session.cluster.kubectl("apply", "-n", session.namespace, "-f", "-", stdin=MEDIUM)
    refused = session.run("up", "--only", "mlflow,dask", "--workers", "4")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    line = refused.stderr.strip()
    assert "\n" not in line and "does not fit the quota of namespace" in line
    assert "limits.cpu needs 2700m more" in line and "limits.memory needs 2816Mi more" in line
    assert session.labelled() == []

    fits = session.run("up", "--only", "mlflow,dask")
    assert fits.returncode == 0, fits.stdout + fits.stderr
    again = session.run("up", "--only", "mlflow,dask")
    assert again.returncode == 0 and "quota" not in again.stdout, "an unchanged plan needs no quota check"


def test_every_shortfall_is_listed_at_once_before_any_write(session):
    """Quota, bucket and tools fail together: one line names them all; nothing is applied."""
    session.cluster.kubectl("apply", "-n", session.namespace, "-f", "-", stdin=MEDIUM)
    old = session.tmp / "old-kubectl"
    old.write_text(
        "#!/bin/sh\n"
        """[ "$1 $2" = "version --client" ] && { echo '{"clientVersion": {"major": "1", "minor": "20", "gitVersion": "v1.20.0"}}'; exit 0; }\n"""
        'exec kubectl "$@"\n'
    )
    old.chmod(0o755)
    refused = session.run(
        "up", "--only", "mlflow,dask", "--workers", "4", "--bucket", "ws-missing",
        env={"INVOKE_TOOLS_KUBECTL": str(old)},
    )  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    line = refused.stderr.strip()
    assert "\n" not in line and line.startswith("error: 3 problems, nothing was changed: (1) "), line
    assert "kubectl 1.20.0" in line and "too old" in line
    assert "bucket ws-missing does not exist" in line
    assert "does not fit the quota of namespace" in line
    assert session.labelled() == []
