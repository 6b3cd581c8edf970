"""What the playbooks send kubectl is read back as written: strings stay strings in Go's YAML."""

import json

from playbooks.render import to_yaml

# A 16-hex-digit digest that is all digits (about 1 in 2,000) once failed `up`: kubectl
# read the unquoted annotation as a number ("expected string").
NUMBER_LIKE = ["0128000437704991", "123", "1e5", "0x1F", "12.5", "007"]


def test_number_like_strings_reach_the_api_as_strings(session):
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "yaml-check", "namespace": session.namespace, "annotations": {"digest": NUMBER_LIKE[0]}},
        "data": {f"k{i}": value for i, value in enumerate(NUMBER_LIKE)},
    }
    session.cluster.kubectl("apply", "--server-side", "-f", "-", stdin=to_yaml([doc]))
    live = json.loads(
        session.cluster.kubectl("get", "configmap", "yaml-check", "-n", session.namespace, "-o", "json").stdout
    )
    assert live["metadata"]["annotations"]["digest"] == NUMBER_LIKE[0]
    assert live["data"] == doc["data"]
