"""The Kubernetes manifests (compose/kubernetes: a base, a cpu and a gpu overlay), offline: each overlay rendered by
``kubectl kustomize``, every document validated against the Kubernetes 1.32 schemas (kubernetes-validate, strict, so
an unknown or misspelt field fails), then the properties that matter checked on what was rendered: probes on the
health module, the GPU and the memory share, the password only in the Secret, Redis fenced off, the autoscaler on
the consumer lag, the images compose builds, non-root pods. Each check is shown to fail on a manifest broken for it.
No cluster runs these manifests here."""

from __future__ import annotations

import base64
import copy
import importlib
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from common.config import ConfigError, parse_config
from common.keys import Keys
from tests.conftest import ROOT

# kubernetes-validate ships no type information (no py.typed): imported as a plain module object, which mypy takes
# as Any, rather than under a type-ignore that would turn stale once the project's mypy config names it.
kubernetes_validate: Any = importlib.import_module("kubernetes_validate")

COMPOSE = ROOT / "compose"
KUBERNETES = COMPOSE / "kubernetes"
OVERLAYS = ("cpu", "gpu")
KUBERNETES_VERSION = "1.32"  # the schemas validated against; kubernetes-validate 1.37.0 ships 1.25 to 1.37
KUBECTL = shutil.which("kubectl")
PASSWORD = "k8s-test-password-3f9c2a7e"  # written only into a temporary copy of the tree, never into the checkout
HEALTH = ["python", "-m", "common.stack.health", "--max-age"]
SERVICES = ("ingest", "detector", "sink-store", "sink-alerts")  # the project's processes; redis is the other pod
PART_OF = {"app.kubernetes.io/part-of": "streamyolo"}
LAG_METRIC = "streamyolo_consumer_lag"
FRACTION_ENV = "STREAMYOLO__DETECTOR__POOLS__MAIN__ENGINE__MEMORY_FRACTION"
ENGINE_GPU_ENV = "STREAMYOLO__DETECTOR__POOLS__MAIN__ENGINE__GPU"
GPU = "nvidia.com/gpu"
REDIS_URL = "redis://:$(REDIS_PASSWORD)@redis:6379/0"  # compose's, with the kubelet's $(VAR) expansion

Doc = dict[str, Any]
Check = Callable[[list[Doc], str], list[str]]
Breakage = Callable[[list[Doc]], None]


# ------------------------------------------------------------------------------------------------ rendering
def kubectl() -> str:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: it renders the manifests (kubectl kustomize), offline")
    return KUBECTL


def kustomize(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    """Each overlay's documents, rendered from a copy of compose/kubernetes with a test password in base/redis.env
    (the file a user writes): a redis.env in the checkout, a real password, is neither copied nor read."""
    tree = tmp_path_factory.mktemp("kubernetes") / "kubernetes"
    shutil.copytree(KUBERNETES, tree, ignore=shutil.ignore_patterns("redis.env"))
    (tree / "base" / "redis.env").write_text(f"REDIS_PASSWORD={PASSWORD}\n")
    out: dict[str, list[Doc]] = {}
    for overlay in OVERLAYS:
        done = kustomize(tree / "overlays" / overlay)
        assert done.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{done.stderr}"
        out[overlay] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return out


# ------------------------------------------------------------------------------------------------ helpers
def find(docs: list[Doc], kind: str, name: str) -> Doc:
    """The one document of that kind named ``name`` or, for a generated ConfigMap or Secret, ``name-<hash>``."""
    pattern = re.compile(rf"{re.escape(name)}(-[a-z0-9]{{10}})?")
    found = [d for d in docs if d["kind"] == kind and pattern.fullmatch(d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def workloads(docs: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}


def pod_spec(docs: list[Doc], workload: str) -> Doc:
    spec: Doc = workloads(docs)[workload]["spec"]["template"]["spec"]
    return spec


def pod_labels(docs: list[Doc], workload: str) -> dict[str, str]:
    labels: dict[str, str] = workloads(docs)[workload]["spec"]["template"]["metadata"]["labels"]
    return labels


def containers(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(workload name, container) for every container of every workload, init containers too."""
    for name, w in workloads(docs).items():
        spec = w["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield name, c


def container(docs: list[Doc], workload: str) -> Doc:
    [c] = [c for name, c in containers(docs) if name == workload]
    return c


def env_of(c: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in c.get("env", [])}


def flag(args: list[str], name: str) -> str | None:
    """The value after ``name`` on a command line, or None."""
    return args[args.index(name) + 1] if name in args[:-1] else None


def exec_command(c: Doc, probe: str) -> list[str]:
    command: list[str] = c.get(probe, {}).get("exec", {}).get("command", [])
    return command


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels; matchExpressions In, NotIn, Exists, DoesNotExist) matches these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        value, present, values = labels.get(e["key"]), e["key"] in labels, e.get("values", [])
        matches = {
            "In": present and value in values,
            "NotIn": value not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }
        if not matches[e["operator"]]:
            return False
    return True


def compose_images() -> dict[str, str]:
    """Service -> image in compose/docker-compose.yml, its ${VAR:-default}s at their defaults."""
    services = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())["services"]
    return {name: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", s["image"]) for name, s in services.items()}


def dockerfile_user() -> int:
    """The one USER every project image runs as (compose/Dockerfile.*)."""
    users = {m for p in COMPOSE.glob("Dockerfile.*") for m in re.findall(r"^USER (\d+)$", p.read_text(), re.M)}
    assert len(users) == 1, f"the Dockerfiles disagree on their user: {users}"
    return int(users.pop())


# ------------------------------------------------------------------------------------------------ the checks
# Each returns what is wrong (empty: nothing); test_each_check_catches_what_it_is_for breaks a rendering for each.
def check_probes(docs: list[Doc], overlay: str) -> list[str]:
    """Every container has liveness and readiness probes; the project's run the health module, as compose's
    healthcheck does; the detector has a startup probe for its slow start."""
    problems = [f"no workload {s}" for s in SERVICES if s not in workloads(docs)]
    for workload, c in containers(docs):
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in c:
                problems.append(f"{workload}/{c['name']}: no {probe}")
            elif workload in SERVICES and exec_command(c, probe)[:4] != HEALTH:
                problems.append(f"{workload}/{c['name']}: {probe} does not run {' '.join(HEALTH)}")
    if exec_command(container(docs, "detector"), "startupProbe")[:4] != HEALTH:
        problems.append("detector: no startup probe on the health module for its slow start")
    return problems


def check_gpu(docs: list[Doc], overlay: str) -> list[str]:
    """gpu: the detector asks for one GPU, tolerates GPU nodes' taint, and its engine takes GPU 0 and a memory share;
    cpu: nothing asks for a GPU and the engine runs on the CPU. The variables are applied to the stack config the
    ConfigMap holds, as the service would apply them, so a misspelt name or a bad value fails here too."""
    problems = []
    for workload, c in containers(docs):
        want = 1 if overlay == "gpu" and workload == "detector" else None
        for part in ("requests", "limits"):
            asked = c.get("resources", {}).get(part, {}).get(GPU)
            if asked != want:
                problems.append(f"{workload}/{c['name']}: resources.{part}.{GPU} is {asked}, expected {want}")
    detector = container(docs, "detector")
    env = {k: e["value"] for k, e in env_of(detector).items() if k.startswith("STREAMYOLO__") and "value" in e}
    stack = find(docs, "ConfigMap", "stack")["data"]["stack.yaml"]
    try:
        config = parse_config(stack, source="ConfigMap stack", base_dir=Path("/config"), environ=env)
    except ConfigError as exc:
        return [*problems, f"the detector's environment does not apply to the stack config: {exc}"]
    engine: Any = config.pool("main").engine
    tolerations = pod_spec(docs, "detector").get("tolerations", [])
    tolerates = any(t.get("key") == GPU and t.get("operator") == "Exists" for t in tolerations)
    if overlay == "gpu":
        if FRACTION_ENV not in env or not 0 < engine.memory_fraction < 1:
            problems.append(f"detector: {FRACTION_ENV} does not set a memory share (got {engine.memory_fraction})")
        if engine.gpu != 0:
            problems.append(f"detector: engine.gpu is {engine.gpu!r}, expected 0 (the pod's own GPU)")
        if not tolerates:
            problems.append(f"detector: no toleration for the {GPU} taint")
    else:
        if engine.gpu is not None:
            problems.append(f"detector: engine.gpu is {engine.gpu!r}, expected None (the CPU)")
        if tolerates or FRACTION_ENV in env:
            problems.append("detector: GPU settings in the cpu overlay")
    return problems


def check_password(docs: list[Doc], overlay: str) -> list[str]:
    """The password is in the Secret and nowhere else in clear (no ConfigMap, env value or argument): containers
    take it from the Secret and build REDIS_URL from it by $(REDIS_PASSWORD), defined before it."""
    problems = []
    secret = find(docs, "Secret", "redis")
    if base64.b64decode(secret.get("data", {}).get("REDIS_PASSWORD", "")).decode() != PASSWORD:
        problems.append("the Secret redis does not hold the password of redis.env")
    problems += [
        f"the password is in clear in {doc['kind']} {doc['metadata']['name']}"
        for doc in docs
        if doc["kind"] != "Secret" and PASSWORD in yaml.safe_dump(doc)
    ]
    for workload, c in containers(docs):
        ref = env_of(c).get("REDIS_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef", {})
        if (ref.get("name"), ref.get("key")) != (secret["metadata"]["name"], "REDIS_PASSWORD"):
            problems.append(f"{workload}/{c['name']}: REDIS_PASSWORD does not come from the Secret")
        if workload in SERVICES:
            names = [e["name"] for e in c.get("env", [])]
            url = env_of(c).get("REDIS_URL", {}).get("value")
            if url != REDIS_URL or names.index("REDIS_URL") < names.index("REDIS_PASSWORD"):
                problems.append(f"{workload}/{c['name']}: REDIS_URL is not {REDIS_URL} after REDIS_PASSWORD")
    return problems


def check_network_policy(docs: list[Doc], overlay: str) -> list[str]:
    """Every pod of the namespace is denied ingress by default; Redis lets in only the stack's pods, on 6379; every
    stack pod carries the label that lets it reach Redis."""
    problems = []
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    if not any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") for p in policies):
        problems.append("no default-deny ingress policy selecting every pod")
    redis_labels = pod_labels(docs, "redis")
    on_redis = [p for p in policies if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"], redis_labels)]
    if not on_redis:
        problems.append("no NetworkPolicy selects the Redis pods")
    stack_pods_only = {"podSelector": {"matchLabels": PART_OF}}
    for p in on_redis:
        for rule in p["spec"].get("ingress", []):
            if not rule.get("from") or any(peer != stack_pods_only for peer in rule["from"]):
                problems.append(f"{p['metadata']['name']}: lets in more than the stack's pods: {rule.get('from')}")
            if [port.get("port") for port in rule.get("ports", [])] != [6379]:
                problems.append(f"{p['metadata']['name']}: ports other than Redis's: {rule.get('ports')}")
    problems += [
        f"{s}: its pods lack {PART_OF}, so they cannot reach Redis"
        for s in SERVICES
        if not selects({"matchLabels": PART_OF}, pod_labels(docs, s))
    ]
    return problems


def check_autoscaling(docs: list[Doc], overlay: str) -> list[str]:
    """gpu: an autoscaling/v2 HPA scales the detector StatefulSet on the lag metric, and the StatefulSet leaves its
    replica count to it; cpu: no autoscaler."""
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    if overlay == "cpu":
        return [f"an HPA in the cpu overlay: {h['metadata']['name']}" for h in hpas]
    if len(hpas) != 1:
        return [f"expected one HPA, found {len(hpas)}"]
    spec, problems = hpas[0]["spec"], []
    target = spec["scaleTargetRef"]
    if (target.get("apiVersion"), target["kind"], target["name"]) != ("apps/v1", "StatefulSet", "detector"):
        problems.append(f"the HPA scales {target}, not the detector StatefulSet")
    names = [m["external"]["metric"]["name"] for m in spec.get("metrics", []) if m["type"] == "External"]
    if names != [LAG_METRIC]:
        problems.append(f"the HPA's external metrics are {names}, not [{LAG_METRIC}]")
    if not 1 <= spec.get("minReplicas", 1) <= spec["maxReplicas"]:
        problems.append("the HPA's replica bounds are inverted")
    if "replicas" in find(docs, "StatefulSet", "detector")["spec"]:
        problems.append("the detector StatefulSet sets replicas: every apply would undo the HPA's count")
    return problems


def check_images(docs: list[Doc], overlay: str) -> list[str]:
    """Each container runs the image compose gives its service (the detector: the torch image, compose's default)."""
    expected = compose_images()
    return [
        f"{workload}/{c['name']}: image {c.get('image')}, compose has {expected.get(workload)}"
        for workload, c in containers(docs)
        if c.get("image") != expected.get(workload)
    ]


def check_security(docs: list[Doc], overlay: str) -> list[str]:
    """What the namespace's "restricted" Pod Security Standard enforces, and more: non-root (the project's pods as
    the images' own user), the runtime's seccomp profile, no privilege escalation, every capability dropped, a
    read-only root filesystem, no API token."""
    problems, user = [], dockerfile_user()
    labels = find(docs, "Namespace", "streamyolo")["metadata"]["labels"]
    if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
        problems.append("the Namespace does not enforce the restricted Pod Security Standard")
    for name in workloads(docs):
        spec = pod_spec(docs, name)
        pod = spec.get("securityContext", {})
        if pod.get("runAsNonRoot") is not True or pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: the pod is not runAsNonRoot with the RuntimeDefault seccomp profile")
        if name in SERVICES and pod.get("runAsUser") != user:
            problems.append(f"{name}: runAsUser {pod.get('runAsUser')}, the images run as {user}")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: mounts a service account token it has no use for")
    for workload, c in containers(docs):
        sc = c.get("securityContext", {})
        locked = (sc.get("allowPrivilegeEscalation"), sc.get("readOnlyRootFilesystem")) == (False, True)
        if not locked or sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{workload}/{c['name']}: not read-only, no escalation, every capability dropped")
    return problems


def check_config_and_replicas(docs: list[Doc], overlay: str) -> list[str]:
    """Every service reads the stack ConfigMap (compose/stack.yaml) at /config/stack.yaml and serves its metrics
    where its annotations, the metrics NetworkPolicy and the env say; each detector replica is named by its pod."""
    problems = []
    stack = find(docs, "ConfigMap", "stack")
    env_map = find(docs, "ConfigMap", "streamyolo-env")
    port = int(env_map["data"].get("STREAMYOLO_METRICS_PORT", 0))
    if env_map["data"].get("STREAMYOLO_METRICS_HOST") != "0.0.0.0" or not port:
        problems.append("metrics are not served on the pod's addresses (STREAMYOLO_METRICS_HOST and _PORT)")
    metrics_policy = find(docs, "NetworkPolicy", "metrics")["spec"]
    for s in SERVICES:
        c = container(docs, s)
        if flag(c.get("args", []), "--config") != "/config/stack.yaml":
            problems.append(f"{s}: not --config /config/stack.yaml")
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        at_config = [v for v in pod_spec(docs, s).get("volumes", []) if mounts.get(v["name"]) == "/config"]
        if [v.get("configMap", {}).get("name") for v in at_config] != [stack["metadata"]["name"]]:
            problems.append(f"{s}: the stack ConfigMap is not mounted at /config")
        if [r.get("configMapRef", {}).get("name") for r in c.get("envFrom", [])] != [env_map["metadata"]["name"]]:
            problems.append(f"{s}: does not take its environment from streamyolo-env")
        annotations = workloads(docs)[s]["spec"]["template"]["metadata"].get("annotations", {})
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        if annotations.get("prometheus.io/port") != str(port) or ports.get("metrics") != port:
            problems.append(f"{s}: its metrics port and annotations do not say {port}")
        if not selects(metrics_policy["podSelector"], pod_labels(docs, s)):
            problems.append(f"{s}: the metrics NetworkPolicy does not let Prometheus in")
    if [p["port"] for rule in metrics_policy["ingress"] for p in rule["ports"]] != [port]:
        problems.append("the metrics NetworkPolicy opens another port")
    if yaml.safe_load(stack["data"]["stack.yaml"]) != yaml.safe_load((COMPOSE / "stack.yaml").read_text()):
        problems.append("the stack ConfigMap differs from compose/stack.yaml")
    detector = container(docs, "detector")
    field = env_of(detector).get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    args = detector.get("args", [])
    if (field, flag(args, "--replica"), flag(args, "--pool")) != ("metadata.name", "$(POD_NAME)", "main"):
        problems.append("detector: not --pool main --replica $(POD_NAME), POD_NAME from metadata.name")
    if find(docs, "StatefulSet", "detector")["spec"].get("podManagementPolicy") != "Parallel":
        problems.append("detector: replicas would start one at a time (podManagementPolicy)")
    return problems


CHECKS: dict[str, Check] = {
    "probes": check_probes,
    "gpu": check_gpu,
    "password": check_password,
    "network_policy": check_network_policy,
    "autoscaling": check_autoscaling,
    "images": check_images,
    "security": check_security,
    "config_and_replicas": check_config_and_replicas,
}


# ------------------------------------------------------------------------------------------------ breakages
# name -> (the check that must catch it, the overlay broken, how): test_each_check_catches_what_it_is_for.
BREAKAGES: dict[str, tuple[str, str, Breakage]] = {}


def breaks(check: str, overlay: str) -> Callable[[Breakage], Breakage]:
    def register(fn: Breakage) -> Breakage:
        BREAKAGES[fn.__name__.replace("_", "-")] = (check, overlay, fn)
        return fn

    return register


def set_env(c: Doc, name: str, value: str) -> None:
    c["env"] = [e for e in c.get("env", []) if e["name"] != name] + [{"name": name, "value": value}]


@breaks("probes", "cpu")
def no_liveness_probe(docs: list[Doc]) -> None:
    del container(docs, "ingest")["livenessProbe"]


@breaks("probes", "gpu")
def readiness_not_the_health_module(docs: list[Doc]) -> None:
    container(docs, "sink-store")["readinessProbe"]["exec"]["command"] = ["true"]


@breaks("probes", "gpu")
def no_detector_startup_probe(docs: list[Doc]) -> None:
    del container(docs, "detector")["startupProbe"]


@breaks("gpu", "gpu")
def gpu_not_requested(docs: list[Doc]) -> None:
    del container(docs, "detector")["resources"]["limits"][GPU]


@breaks("gpu", "gpu")
def no_memory_fraction(docs: list[Doc]) -> None:
    c = container(docs, "detector")
    c["env"] = [e for e in c["env"] if e["name"] != FRACTION_ENV]


@breaks("gpu", "gpu")
def memory_fraction_misspelt(docs: list[Doc]) -> None:
    c = container(docs, "detector")
    c["env"] = [{**e, "name": e["name"] + "S"} if e["name"] == FRACTION_ENV else e for e in c["env"]]


@breaks("gpu", "cpu")
def gpu_in_the_cpu_overlay(docs: list[Doc]) -> None:
    container(docs, "detector")["resources"]["limits"][GPU] = 1


@breaks("gpu", "cpu")
def cpu_engine_left_on_auto(docs: list[Doc]) -> None:
    set_env(container(docs, "detector"), ENGINE_GPU_ENV, "auto")


@breaks("password", "cpu")
def password_in_a_configmap(docs: list[Doc]) -> None:
    find(docs, "ConfigMap", "streamyolo-env")["data"]["REDIS_PASSWORD"] = PASSWORD


@breaks("password", "gpu")
def password_in_the_url(docs: list[Doc]) -> None:
    set_env(container(docs, "ingest"), "REDIS_URL", f"redis://:{PASSWORD}@redis:6379/0")


@breaks("network_policy", "cpu")
def redis_policy_misses_redis(docs: list[Doc]) -> None:
    find(docs, "NetworkPolicy", "redis")["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] = "redis-0"


@breaks("network_policy", "cpu")
def redis_open_to_every_namespace(docs: list[Doc]) -> None:
    find(docs, "NetworkPolicy", "redis")["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})


@breaks("network_policy", "gpu")
def no_default_deny(docs: list[Doc]) -> None:
    docs.remove(find(docs, "NetworkPolicy", "default-deny-ingress"))


@breaks("autoscaling", "gpu")
def hpa_on_ingest(docs: list[Doc]) -> None:
    find(docs, "HorizontalPodAutoscaler", "detector")["spec"]["scaleTargetRef"].update(kind="Deployment", name="ingest")


@breaks("autoscaling", "gpu")
def hpa_on_another_metric(docs: list[Doc]) -> None:
    find(docs, "HorizontalPodAutoscaler", "detector")["spec"]["metrics"][0]["external"]["metric"]["name"] = "cpu"


@breaks("autoscaling", "gpu")
def replicas_fight_the_hpa(docs: list[Doc]) -> None:
    find(docs, "StatefulSet", "detector")["spec"]["replicas"] = 1


@breaks("images", "cpu")
def another_image(docs: list[Doc]) -> None:
    container(docs, "ingest")["image"] = "streamyolo-cpu:latest"


@breaks("security", "gpu")
def root_pod(docs: list[Doc]) -> None:
    del pod_spec(docs, "sink-store")["securityContext"]["runAsNonRoot"]


@breaks("security", "cpu")
def writable_root_filesystem(docs: list[Doc]) -> None:
    container(docs, "detector")["securityContext"]["readOnlyRootFilesystem"] = False


@breaks("config_and_replicas", "gpu")
def replica_not_the_pod_name(docs: list[Doc]) -> None:
    args = container(docs, "detector")["args"]
    args[args.index("--replica") + 1] = "detector"


@breaks("config_and_replicas", "cpu")
def metrics_on_loopback(docs: list[Doc]) -> None:
    find(docs, "ConfigMap", "streamyolo-env")["data"]["STREAMYOLO_METRICS_HOST"] = "127.0.0.1"


@breaks("config_and_replicas", "cpu")
def stack_config_drifted(docs: list[Doc]) -> None:
    data = find(docs, "ConfigMap", "stack")["data"]
    data["stack.yaml"] = data["stack.yaml"].replace("max_batch: 32", "max_batch: 8")


# ------------------------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_document_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    for doc in rendered[overlay]:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    expected = {"Namespace", "ConfigMap", "Secret", "Service", "PersistentVolumeClaim", "Deployment", "StatefulSet"}
    expected |= {"NetworkPolicy"} | ({"HorizontalPodAutoscaler"} if overlay == "gpu" else set())
    assert {doc["kind"] for doc in rendered[overlay]} == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("check", CHECKS)
def test_the_rendered_manifests_pass_each_check(rendered: dict[str, list[Doc]], overlay: str, check: str) -> None:
    assert CHECKS[check](rendered[overlay], overlay) == []


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_each_check_catches_what_it_is_for(rendered: dict[str, list[Doc]], breakage: str) -> None:
    check, overlay, broken = BREAKAGES[breakage]
    docs = copy.deepcopy(rendered[overlay])
    broken(docs)
    assert CHECKS[check](docs, overlay), f"check {check} missed {breakage}"


def test_every_check_has_a_breakage_it_catches() -> None:
    assert {check for check, _, _ in BREAKAGES.values()} == set(CHECKS)


def test_a_misspelt_field_or_a_wrong_type_fails_the_schema_validation(rendered: dict[str, list[Doc]]) -> None:
    statefulset = find(rendered["gpu"], "StatefulSet", "detector")
    misspelt = copy.deepcopy(statefulset)
    c = misspelt["spec"]["template"]["spec"]["containers"][0]
    c["livenesProbe"] = c.pop("livenessProbe")
    with pytest.raises(jsonschema.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    wrong_type = copy.deepcopy(statefulset)
    wrong_type["spec"]["podManagementPolicy"] = ["Parallel"]
    with pytest.raises(jsonschema.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSION, strict=True)
    # A kind without a schema (a CRD, such as KEDA's ScaledObject) is an error too, never passed unchecked.
    keda = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "detector"}}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(keda, KUBERNETES_VERSION, strict=True)


def test_rendering_without_the_password_file_fails_and_names_it(tmp_path: Path) -> None:
    """As compose refuses to start without REDIS_PASSWORD: no redis.env, no manifests (and no default password)."""
    shutil.copytree(KUBERNETES, tmp_path / "kubernetes", ignore=shutil.ignore_patterns("redis.env"))
    done = kustomize(tmp_path / "kubernetes" / "overlays" / "cpu")
    assert done.returncode != 0
    assert "redis.env" in done.stderr


def test_the_kubernetes_stack_config_is_compose_s_but_for_comments() -> None:
    """kustomize reads no file outside its folder, so base/stack.yaml is a copy: equal to compose/stack.yaml once
    parsed (what the overlays change comes from the environment, not from the file)."""
    base = yaml.safe_load((KUBERNETES / "base" / "stack.yaml").read_text())
    assert base == yaml.safe_load((COMPOSE / "stack.yaml").read_text())


def test_the_adapter_rule_serves_the_lag_of_the_detector_group_the_hpa_reads() -> None:
    """prometheus-adapter-values.yaml (documentation, not applied) serves the metric the HPA names, for the consumer
    group of the pool the StatefulSet serves, taking the max over the replicas (each reports the group's whole lag)
    before the sum over the streams."""
    gpu = KUBERNETES / "overlays" / "gpu"
    [rule] = yaml.safe_load((gpu / "prometheus-adapter-values.yaml").read_text())["rules"]["external"]
    hpa = yaml.safe_load((gpu / "hpa.yaml").read_text())
    stack = yaml.safe_load((KUBERNETES / "base" / "stack.yaml").read_text())
    assert [p["name"] for p in stack["detector"]["pools"]] == ["main"]
    group = Keys(stack["streams"]["prefix"]).detector_group("main")
    assert rule["name"]["as"] == hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == LAG_METRIC
    assert rule["seriesQuery"].startswith(LAG_METRIC + "{")
    assert f'group="{group}"' in rule["seriesQuery"] and f'group="{group}"' in rule["metricsQuery"]
    assert "sum by (namespace) (max by (namespace, stream)" in " ".join(rule["metricsQuery"].split())
