"""Every manifest in deploy/ against Kubernetes' own OpenAPI schemas, in strict mode: an unknown field is
an error, not silently dropped by the API server. kubernetes-validate ships the schemas, so no cluster and
no network are needed.

The InferenceService is a KServe custom resource, and KServe's CRD schema is not vendored (deploy/README.md,
"Validation"): what is checked is what KServe takes from Kubernetes unchanged, its containers and metadata.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
# The oldest version the manifests claim: the preStop sleep action needs 1.30.
KUBERNETES_VERSION = "1.30.0"
INFERENCESERVICES = ["inferenceservice.yaml", "inferenceservice-grpc.yaml"]

Manifest = dict[str, Any]


def only(name: str) -> Manifest:
    [manifest] = [document for document in yaml.safe_load_all((DEPLOY / name).read_text()) if document]
    return manifest


def kustomized() -> list[str]:
    """What `kubectl apply -k deploy/` applies: the kustomization's resources, nothing transformed."""
    return list(only("kustomization.yaml")["resources"])


def validate_kubernetes(manifest: Manifest) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


@cache
def kubernetes_definition(name: str) -> jsonschema.protocols.Validator:
    """A validator for one definition of Kubernetes' API, such as io.k8s.api.core.v1.Container."""
    folder = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
    definitions = json.loads((folder / "_definitions.json").read_text())
    registry: Registry[Any] = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
    schema = {"$ref": f"{definitions['$id']}#/$defs/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_inferenceservice_parts(manifest: Manifest) -> None:
    kubernetes_definition("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta").validate(manifest["metadata"])
    for container in manifest["spec"]["predictor"]["containers"]:
        kubernetes_definition("io.k8s.api.core.v1.Container").validate(container)


def test_kustomization_lists_every_plain_kubernetes_manifest_and_only_files_that_exist() -> None:
    plain = {path.name for path in DEPLOY.glob("*.yaml")} - {"kustomization.yaml", *INFERENCESERVICES}
    assert sorted(kustomized()) == sorted(plain)
    assert all((DEPLOY / name).is_file() for name in kustomized())


def test_kustomization_is_one_kustomize_reads() -> None:
    kustomization = only("kustomization.yaml")
    assert (kustomization["apiVersion"], kustomization["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    assert kustomization.keys() == {"apiVersion", "kind", "resources"}  # no transformer left unchecked


@pytest.mark.parametrize("name", kustomized())
def test_manifest_is_valid_against_the_kubernetes_schema(name: str) -> None:
    validate_kubernetes(only(name))


@pytest.mark.parametrize("name", INFERENCESERVICES)
def test_inferenceservice_containers_and_metadata_are_valid_kubernetes(name: str) -> None:
    validate_inferenceservice_parts(only(name))


def test_a_misspelt_field_is_rejected() -> None:
    deployment = only("deployment.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="'livenesProbe' was unexpected"):
        validate_kubernetes(deployment)


def test_a_value_of_the_wrong_type_is_rejected() -> None:
    service = only("service.yaml")
    service["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError, match="'eighty' is not of type"):
        validate_kubernetes(service)


def test_an_older_kubernetes_rejects_the_preStop_sleep_action() -> None:
    # The action is in the API from 1.29 (alpha, off by default) and on by default from 1.30.
    with pytest.raises(kubernetes_validate.ValidationError, match="'sleep' was unexpected"):
        kubernetes_validate.validate(only("deployment.yaml"), "1.28.0", strict=True)


@pytest.mark.parametrize("mutate", [
    lambda isvc: isvc["spec"]["predictor"]["containers"][0]["ports"][0].update(containerPort="8000"),
    lambda isvc: isvc["spec"]["predictor"]["containers"][0]["readinessProbe"].update(grpcPort=8001),
    lambda isvc: isvc["metadata"].update(label={"a": "b"}),
], ids=["port-as-string", "unknown-probe-field", "misspelt-metadata"])
def test_an_invalid_inferenceservice_container_is_rejected(mutate: Callable[[Manifest], None]) -> None:
    isvc = only("inferenceservice.yaml")
    mutate(isvc)
    with pytest.raises(jsonschema.ValidationError):
        validate_inferenceservice_parts(isvc)
