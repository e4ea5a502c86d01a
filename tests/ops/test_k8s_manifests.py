"""Static checks of the Kubernetes manifests and monitoring files in k8s/."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from auditsvc.ops.settings import VARIABLES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
MONITORING = K8S / "monitoring"
KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"

# Set outside the ConfigMap: Secrets (MONGODB_URI, AUDIT_API_TOKEN via its _FILE) and
# the downward API (REPLICA_ID, ADVERTISE_ADDRESS).
NOT_IN_CONFIGMAP = {"MONGODB_URI", "AUDIT_API_TOKEN", "REPLICA_ID", "ADVERTISE_ADDRESS"}
# Files in k8s/ that are Kubernetes objects but deliberately not kustomize resources.
NOT_IN_KUSTOMIZATION = {"secrets.example.yaml"}
READINESS_SERVICE = "auditpb.v1.AuditService"
TOKEN_SECRET = "auditsvc-api-token"
TLS_SECRET = "auditsvc-tls"


def manifest_files() -> list[Path]:
    """Kubernetes object files: every YAML in k8s/ but kustomization.yaml and monitoring/."""
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def find(kind: str, name: str) -> dict[str, Any]:
    for path in manifest_files():
        for doc in load_docs(path):
            if doc.get("kind") == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind}/{name} in {K8S}")


@pytest.fixture(scope="module")
def configmap() -> dict[str, str]:
    data: dict[str, str] = find("ConfigMap", "auditsvc-config")["data"]
    return data


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return find("Deployment", "auditsvc")


@pytest.fixture(scope="module")
def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec["containers"]
    c: dict[str, Any] = only
    return c


def metric_names(expr: str) -> set[str]:
    names = set()
    for token in re.findall(r"[a-z_:]+", expr):
        if token.startswith(("data_manager_", "auditsvc_")):
            names.add(re.sub(r"_(bucket|sum|count)$", "", token))
    return names


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


class TestSchema:
    """The manifests are valid Kubernetes objects under kubernetes-validate --strict."""

    def test_kubernetes_validate_strict(self) -> None:
        """Every object in every manifest file passes strict schema validation."""
        assert KUBERNETES_VALIDATE.exists(), f"{KUBERNETES_VALIDATE} missing: run `make setup`"
        files = manifest_files()
        result = subprocess.run(
            [str(KUBERNETES_VALIDATE), "--strict", *map(str, files)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        # An unknown kind or apiVersion is only a WARN with exit 0: demand a pass per object.
        assert "WARN" not in output, output
        expected = {
            f"{doc['kind'].lower()}/{doc['metadata']['name']}"
            for path in files
            for doc in load_docs(path)
        }
        passed = set(re.findall(r"passed for resource (\S+) against", output))
        assert passed == expected, output

    def test_every_resource_file_is_in_kustomization(self) -> None:
        """kustomization.yaml lists exactly the manifest files, never the example Secrets."""
        kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
        resources = set(kustomization["resources"])
        on_disk = {p.name for p in manifest_files()} - NOT_IN_KUSTOMIZATION
        assert resources == on_disk
        assert not resources & NOT_IN_KUSTOMIZATION

    def test_kustomization_namespace_and_labels(self) -> None:
        """kustomize puts everything in market-data with the auditsvc name label."""
        kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
        assert kustomization["namespace"] == "market-data"
        assert kustomization["commonLabels"] == {"app.kubernetes.io/name": "auditsvc"}


class TestConfigMap:
    """The ConfigMap carries every non-secret variable of auditsvc.ops.settings, documented."""

    def test_keys_match_config_variables(self, configmap: dict[str, str]) -> None:
        """Keys are exactly VARIABLES minus the secret and downward-API ones, no typos."""
        expected = {v.name for v in VARIABLES} - NOT_IN_CONFIGMAP
        assert set(configmap) - expected == set(), "unknown keys"
        assert expected - set(configmap) == set(), "missing keys"

    def test_no_secret_variable_in_configmap(self, configmap: dict[str, str]) -> None:
        """Secret variables and downward-API ones are never ConfigMap keys."""
        secret = {v.name for v in VARIABLES if v.secret}
        assert secret <= NOT_IN_CONFIGMAP
        assert not set(configmap) & NOT_IN_CONFIGMAP

    def test_values_are_strings(self, configmap: dict[str, str]) -> None:
        """Every value is a YAML string, so "false" cannot turn into a boolean."""
        assert all(isinstance(v, str) for v in configmap.values())

    def test_every_key_has_an_inline_comment(self, configmap: dict[str, str]) -> None:
        """Each data line documents its variable with an inline comment."""
        lines = (K8S / "configmap.yaml").read_text().splitlines()
        for key in configmap:
            (line,) = [ln for ln in lines if ln.strip().startswith(f"{key}:")]
            assert re.search(r"\S\s+#\s*\S", line), f"{key} has no inline comment"

    def test_dangerous_switches_off(self, configmap: dict[str, str]) -> None:
        """Automatic backfill and duplicate deletion ship disabled."""
        assert configmap["ENABLE_AUTO_BACKFILL"] == "false"
        assert configmap["ENABLE_DUPLICATE_REMOVAL"] == "false"

    def test_leader_election_on_and_binds_all_interfaces(self, configmap: dict[str, str]) -> None:
        """Replicas elect a leader and listen on the pod IP, not loopback."""
        assert configmap["ENABLE_LEADER_ELECTION"] == "true"
        assert configmap["GRPC_HOST"] == "0.0.0.0"
        assert configmap["METRICS_HOST"] == "0.0.0.0"

    def test_election_timeout_above_twice_heartbeat(self, configmap: dict[str, str]) -> None:
        """The lease outlives two renewals, as auditsvc.ops.settings demands at start-up."""
        timeout = float(configmap["LEADER_ELECTION_TIMEOUT"])
        assert timeout > 2 * float(configmap["LEADER_ELECTION_HEARTBEAT_INTERVAL"])

    def test_file_variables_point_into_secret_mounts(
        self, configmap: dict[str, str], container: dict[str, Any], pod_spec: dict[str, Any]
    ) -> None:
        """The token and TLS paths are files the Deployment mounts from the right Secret key."""
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        files: dict[str, tuple[str, str]] = {}
        for volume in pod_spec["volumes"]:
            if "secret" in volume:
                mount = mounts[volume["name"]]
                assert mount.get("readOnly") is True, volume["name"]
                for item in volume["secret"]["items"]:
                    path = f"{mount['mountPath']}/{item['path']}"
                    files[path] = (volume["secret"]["secretName"], item["key"])
        assert files[configmap["AUDIT_API_TOKEN_FILE"]] == (TOKEN_SECRET, "token")
        # TLS is opt-in (plaintext kubelet probes); the documented paths must be mounted.
        assert all(configmap[k] == "" for k in ("GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE"))
        tls_dir = "/var/run/secrets/auditsvc/tls"
        for name in ("tls.crt", "tls.key", "ca.crt"):
            assert files[f"{tls_dir}/{name}"] == (TLS_SECRET, name)


class TestDeployment:
    """The Deployment runs three hardened, probed replicas wired to the ConfigMap and Secrets."""

    def test_replicas_image_and_command(
        self, deployment: dict[str, Any], container: dict[str, Any]
    ) -> None:
        """Three replicas of auditsvc:0.1.0 run `auditsvc serve`."""
        assert deployment["spec"]["replicas"] == 3
        assert container["image"] == "auditsvc:0.1.0"
        assert container["command"] == ["auditsvc", "serve"]

    def test_env_from_configmap_and_downward_api(self, container: dict[str, Any]) -> None:
        """Config comes from the ConfigMap; identity and address from the downward API."""
        assert {"configMapRef": {"name": "auditsvc-config"}} in container["envFrom"]
        env = {e["name"]: e for e in container["env"]}
        assert env["REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["ADVERTISE_ADDRESS"]["value"] == "$(POD_IP):50051"
        names = [e["name"] for e in container["env"]]
        assert names.index("POD_IP") < names.index("ADVERTISE_ADDRESS"), "$(POD_IP) not expanded"
        ref = env["MONGODB_URI"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("auditsvc-mongodb", "uri")

    def test_ports_match_configmap(
        self, configmap: dict[str, str], container: dict[str, Any], deployment: dict[str, Any]
    ) -> None:
        """Container ports, scrape annotations and ADVERTISE_ADDRESS agree with the ConfigMap."""
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": 50051, "metrics": 9464}
        assert str(ports["grpc"]) == configmap["GRPC_PORT"]
        assert str(ports["metrics"]) == configmap["METRICS_PORT"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == configmap["METRICS_PORT"]
        assert annotations["prometheus.io/path"] == "/metrics"

    def test_probes_are_native_grpc(self, container: dict[str, Any]) -> None:
        """Liveness asks for the whole server, readiness for the AuditService, both over gRPC."""
        liveness = container["livenessProbe"]["grpc"]
        readiness = container["readinessProbe"]["grpc"]
        assert liveness["port"] == readiness["port"] == 50051
        assert liveness.get("service", "") == ""
        assert readiness["service"] == READINESS_SERVICE
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in container:
                handlers = set(container[probe]) & {"exec", "grpc", "httpGet", "tcpSocket"}
                assert handlers == {"grpc"}, probe

    def test_grace_period_exceeds_shutdown_grace(
        self, pod_spec: dict[str, Any], configmap: dict[str, str]
    ) -> None:
        """The kubelet waits longer than the service drains, so SIGKILL never cuts a drain."""
        assert pod_spec["terminationGracePeriodSeconds"] > float(configmap["SHUTDOWN_GRACE"])

    def test_resources_set(self, container: dict[str, Any]) -> None:
        """CPU and memory have both requests and limits."""
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][section]), section

    def test_security_context(self, pod_spec: dict[str, Any], container: dict[str, Any]) -> None:
        """Non-root uid 10001, read-only root, no escalation, no capabilities, RuntimeDefault."""
        pod = pod_spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == 10001
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        ctx = container["securityContext"]
        assert ctx["runAsNonRoot"] is True
        assert ctx["runAsUser"] == 10001
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert "add" not in ctx["capabilities"]
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}

    def test_writable_tmp_and_read_only_secrets(
        self, pod_spec: dict[str, Any], container: dict[str, Any]
    ) -> None:
        """/tmp is an emptyDir; the token and TLS Secrets are mounted read-only, mode 0440."""
        volumes = {v["name"]: v for v in pod_spec["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
        secrets = {v["secret"]["secretName"]: v for v in volumes.values() if "secret" in v}
        assert set(secrets) == {TOKEN_SECRET, TLS_SECRET}
        assert {i["key"] for i in secrets[TLS_SECRET]["secret"]["items"]} == {
            "tls.crt",
            "tls.key",
            "ca.crt",
        }
        for secret in secrets.values():
            assert secret["secret"]["defaultMode"] == 0o440
            assert not secret["secret"].get("optional", False)

    def test_replicas_spread_across_nodes(self, pod_spec: dict[str, Any]) -> None:
        """Replicas are spread over nodes, so one node loss cannot take the quorum."""
        spread = [
            c
            for c in pod_spec.get("topologySpreadConstraints", [])
            if c["topologyKey"] == "kubernetes.io/hostname"
        ]
        anti = pod_spec.get("affinity", {}).get("podAntiAffinity")
        assert spread or anti
        for c in spread:
            assert c["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "auditsvc"}

    def test_no_service_account_token(self, pod_spec: dict[str, Any]) -> None:
        """The pod gets no Kubernetes API credentials it does not use."""
        assert pod_spec["automountServiceAccountToken"] is False


class TestServicesPdbNetworkPolicy:
    """Services, the PodDisruptionBudget and the NetworkPolicy select the auditsvc pods."""

    def test_services(self, deployment: dict[str, Any]) -> None:
        """A ClusterIP Service for clients and a headless one listing every peer."""
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        client = find("Service", "auditsvc")["spec"]
        peers = find("Service", "auditsvc-peers")["spec"]
        for spec in (client, peers):
            assert spec["selector"].items() <= pod_labels.items()
            assert [(p["name"], p["port"]) for p in spec["ports"]] == [("grpc", 50051)]
        assert client.get("type", "ClusterIP") == "ClusterIP"
        assert client.get("clusterIP") != "None"
        assert peers["clusterIP"] == "None"
        assert peers["publishNotReadyAddresses"] is True

    def test_pdb(self, deployment: dict[str, Any]) -> None:
        """minAvailable 2 of 3: drains proceed one pod at a time, never blocked outright."""
        pdb = find("PodDisruptionBudget", "auditsvc")
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["minAvailable"] == 2
        assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    def test_network_policy(self) -> None:
        """gRPC only from labelled clients and peers, metrics only from the monitoring namespace."""
        spec = find("NetworkPolicy", "auditsvc")["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "auditsvc"}
        by_port = {}
        for rule in spec["ingress"]:
            (port,) = rule["ports"]
            by_port[port["port"]] = rule["from"]
        assert set(by_port) == {50051, 9464}
        grpc_sources = by_port[50051]
        assert all(set(s) == {"podSelector"} for s in grpc_sources), "no namespace-wide grpc"
        selectors = [s["podSelector"] for s in grpc_sources]
        # Clients via matchExpressions: kustomize commonLabels would add the app label to
        # from.podSelector.matchLabels and lock every real client out.
        assert {
            "matchExpressions": [{"key": "auditsvc-client", "operator": "In", "values": ["true"]}]
        } in selectors
        assert {"matchLabels": {"app.kubernetes.io/name": "auditsvc"}} in selectors
        assert len(selectors) == 2
        assert by_port[9464] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]

    def test_example_secrets_shapes(self) -> None:
        """The example file shows the three Secrets with the keys the Deployment reads."""
        docs = load_docs(K8S / "secrets.example.yaml")
        keys = {d["metadata"]["name"]: set(d["stringData"]) for d in docs if d["kind"] == "Secret"}
        assert keys == {
            "auditsvc-mongodb": {"uri"},
            TOKEN_SECRET: {"token"},
            TLS_SECRET: {"tls.crt", "tls.key", "ca.crt"},
        }


class TestMonitoring:
    """Alerts and the dashboard use only metrics the service exposes, consistently."""

    def test_metrics_list(self) -> None:
        """METRICS.txt is one unique metric name per line."""
        lines = (MONITORING / "METRICS.txt").read_text().splitlines()
        assert lines and len(lines) == len(set(lines))
        assert all(re.fullmatch(r"(data_manager|auditsvc)_[a-z_]+", line) for line in lines)

    @pytest.mark.parametrize("source", ["alerts.yaml", "dashboard.json"])
    def test_referenced_metrics_are_exposed(self, source: str) -> None:
        """Every metric an expression names is in METRICS.txt."""
        known = set((MONITORING / "METRICS.txt").read_text().split())
        exprs = [r["expr"] for r in alert_rules()] if source == "alerts.yaml" else dashboard_exprs()
        assert exprs
        used = set().union(*map(metric_names, exprs))
        assert used, source
        assert used - known == set()

    def test_alert_metadata(self) -> None:
        """Each alert has a severity, summary, description and a lowercase runbook anchor."""
        rules = alert_rules()
        assert {r["alert"] for r in rules} == {
            "DataManagerNoLeader",
            "DataManagerLowQuality",
            "DataManagerMultipleLeaders",
            "DataManagerAuditStalled",
            "DataManagerLeaseRenewFailures",
            "DataManagerBackfillCapHit",
            "DataManagerBackfillsExpiring",
            "DataManagerSeriesLate",
            "AuditsvcVerdictsStale",
            "AuditsvcSeriesSuspect",
        }
        for rule in rules:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["for"], rule["alert"]
            annotations = rule["annotations"]
            assert annotations["summary"] and annotations["description"], rule["alert"]
            assert annotations["runbook_url"] == f"docs/AUDITOR.md#{rule['alert'].lower()}"

    def test_stalled_threshold_tracks_audit_interval(self, configmap: dict[str, str]) -> None:
        """DataManagerAuditStalled's 3 x N uses the ConfigMap's AUDIT_INTERVAL as N."""
        (rule,) = [r for r in alert_rules() if r["alert"] == "DataManagerAuditStalled"]
        match = re.search(r">\s*3\s*\*\s*(\d+)\s*$", rule["expr"])
        assert match, rule["expr"]
        assert match.group(1) == configmap["AUDIT_INTERVAL"]

    def test_dashboard(self) -> None:
        """The dashboard is schemaVersion 39 with unique panel ids and the nineteen queries."""
        dashboard = json.loads((MONITORING / "dashboard.json").read_text())
        assert dashboard["schemaVersion"] == 39
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        assert set(dashboard_exprs()) == {
            "data_manager_audit_leader_status",
            "histogram_quantile(0.95, "
            "sum(rate(data_manager_audit_cycle_seconds_bucket[5m])) by (le))",
            "sum(rate(data_manager_audit_gaps_detected_total[5m])) by (symbol, timeframe)",
            "data_manager_audit_health_score",
            "sum(rate(auditsvc_forwarded_calls_total[5m])) by (method, outcome)",
            'sum(rate(auditsvc_grpc_requests_total{code!="OK"}[5m])) by (method, code)',
            "max(data_manager_audit_leader_epoch)",
            "max(auditsvc_verdict_age_seconds)",
            "max(auditsvc_live_tail_up)",
            "sum by (reason) (increase(auditsvc_live_tail_restarts_total[5m]))",
            'max(auditsvc_series_state{state="late"})',
            'max(auditsvc_series_state{state="no_data"})',
            "histogram_quantile(0.99, "
            "sum(rate(auditsvc_live_detection_seconds_bucket[5m])) by (le))",
            "sum by (timeframe) (data_manager_audit_backfills_live)",
            "sum by (timeframe) (increase(data_manager_audit_backfills_expired_total[1h]))",
            "sum by (timeframe) (increase(data_manager_audit_gaps_unfillable_total[1h]))",
            "histogram_quantile(0.9, "
            "sum(rate(data_manager_audit_gap_fill_seconds_bucket[1h])) by (le, timeframe))",
            "sum by (rule) (increase(auditsvc_anomalies_found_total[1h]))",
            "max by (timeframe) (auditsvc_suspect_series)",
        }
