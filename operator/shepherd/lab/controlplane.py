"""A real Kubernetes control plane on 127.0.0.1, for tests, benches and `make cluster`.

etcd, kube-apiserver and kube-controller-manager are built from pinned Go modules (the module in
controlplane/, `make cluster-binaries`) and started here as plain processes on free ports: the API server
serves TLS, authenticates client certificates and ServiceAccount tokens, authorizes with RBAC and runs
its default admission plugins (so ValidatingAdmissionPolicy is enforced); the controller manager runs the
controllers a Release's workloads need. No kubelet runs: `shepherd.lab.podsim` plays the nodes.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shepherd.lab.processes import spawn, stop_process
from shepherd.lab.watching import Lifecycle

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "helm", "kstatus")
# What a Release's workloads need, and what keeps namespaces and pods working without a kubelet.
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "job-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "endpointslice-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "validatingadmissionpolicy-status-controller",
)
# ClusterIPs are loopback addresses: shepherd.lab.gateway's stand-in kube-proxy listens on them, so a real
# gateway's requests to a Service stay on this machine. (The API server refuses loopback addresses in
# EndpointSlices, not in a Service's range.)
SERVICE_CLUSTER_IP_RANGE = "127.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN = "shepherd-admin"
CONTROLLER_MANAGER = "system:kube-controller-manager"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or reached; the message says which part and why."""


class RequestError(ControlPlaneError):
    """The API server answered a request with an HTTP error `status`."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binaries_problem(bin_dir: Path) -> str | None:
    """Why the control plane's binaries cannot run from bin_dir, or None when they all can."""
    missing = [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]
    if missing:
        return (
            f"missing in {bin_dir}: {', '.join(missing)}; build them with `make cluster-binaries` "
            "(Go 1.26 and the Go module proxy)"
        )
    return None


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class ControlPlane(Lifecycle):
    """etcd, kube-apiserver and kube-controller-manager, started in `workdir` from `bin_dir`.

    `kubeconfig` has the contexts `admin` (current; group system:masters) and one per user in `users`,
    each with a client certificate and no rights but those RBAC grants it."""

    bin_dir: Path
    workdir: Path
    users: Sequence[str] = ("alice", "bob")
    apiserver_args: Sequence[str] = ()
    # Log every request's metadata (who, verb, resource, when) to `audit_log`, for benches that count calls.
    audit: bool = False
    processes: list[Process] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.jsonl"

    def audited_requests(self, user: str, since: float = 0.0) -> list[dict[str, Any]]:
        """The audit events of `user`'s requests received at or after `since` (a Unix time)."""
        events = []
        with self.audit_log.open(encoding="utf-8") as lines:
            for line in lines:
                event = json.loads(line)
                if event["user"]["username"] != user:
                    continue
                received = datetime.datetime.fromisoformat(
                    event["requestReceivedTimestamp"].replace("Z", "+00:00")
                )
                if received.timestamp() >= since:
                    events.append(event)
        return events

    def start(self, timeout: float = 120.0) -> None:
        problem = binaries_problem(self.bin_dir)
        if problem is not None:
            raise ControlPlaneError(problem)
        for folder in (self.pki, self.logs, self.workdir / "etcd"):
            folder.mkdir(parents=True, exist_ok=True)
        ca = self._write_pki()
        self._write_kubeconfig(ca)
        deadline = time.monotonic() + timeout
        etcd = self._start_etcd()
        self._wait(f"{etcd}/health", deadline, "etcd", tls=False)
        self._start_apiserver(etcd)
        self._wait(f"{self.url}/readyz", deadline, "kube-apiserver", tls=True)
        self._start_controller_manager()
        self._wait_for_default_service_account(deadline)

    def stop(self) -> None:
        """Stop every process with its process group, last started first; their logs stay in `logs`."""
        for process in reversed(self.processes):
            stop_process(process.popen)
        self.processes.clear()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of each process's log, for a failing test's report."""
        parts = []
        for log in sorted(self.logs.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(parts)

    def version(self) -> str:
        result = subprocess.run(
            [str(self.bin_dir / "kube-apiserver"), "--version"], capture_output=True, text=True, check=True
        )
        return result.stdout.strip()

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path, *, expiration_seconds: int = 86400
    ) -> Path:
        """A kubeconfig holding a TokenRequest token of ServiceAccount namespace/name, as a pod would get."""
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        }
        answer = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request)
        token = answer["status"]["token"]
        config = self._kubeconfig_document(
            contexts={f"{namespace}:{name}": {"token": token}}, current=f"{namespace}:{name}"
        )
        path.write_text(yaml.safe_dump(config))
        return path

    def users_kubeconfig(self, users: Mapping[str, Sequence[str]], path: Path) -> Path:
        """A kubeconfig with a context per user, named after it, holding a client certificate of that user in
        those groups (its CN the user, one O per group: how the API server reads a certificate), and the
        admin's context, current. A user of `kubeconfig` (alice, bob) may be given too: the API server knows
        users by name only, so with this kubeconfig they are in these groups instead."""
        contexts = {"admin": self._client_certificate(ADMIN)}
        for user, groups in users.items():
            contexts[user] = self._issue_client_certificate(user, groups)
        path.write_text(yaml.safe_dump(self._kubeconfig_document(contexts, "admin")))
        return path

    def _issue_client_certificate(self, user: str, groups: Sequence[str]) -> dict[str, str]:
        ca_key = serialization.load_pem_private_key((self.pki / "ca.key").read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ControlPlaneError(f"the lab CA's key is of an unexpected type: {type(ca_key).__name__}")
        ca = x509.load_pem_x509_certificate((self.pki / "ca.crt").read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([*subject, x509.NameAttribute(NameOID.COMMON_NAME, user)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        return {
            "client-certificate-data": base64.b64encode(certificate.public_bytes(pem)).decode(),
            "client-key-data": base64.b64encode(
                key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            ).decode(),
        }

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        content_type: str = "application/json",
    ) -> Any:
        """One admin call to the API server (JSON in, JSON out; a PATCH names its kind by content_type)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, context=self._admin_tls(), timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise RequestError(f"{method} {path}: HTTP {error.code}: {detail}", error.code) from error

    def _write_pki(self) -> trustme.CA:
        ca = trustme.CA(organization_name="shepherd lab")
        ca.cert_pem.write_to_path(str(self.pki / "ca.crt"))
        ca.private_key_pem.write_to_path(str(self.pki / "ca.key"))  # for users_kubeconfig's certificates
        server = ca.issue_cert(
            "127.0.0.1", "localhost", "kubernetes.default.svc", common_name="kube-apiserver"
        )
        server.private_key_pem.write_to_path(str(self.pki / "apiserver.key"))
        server.cert_chain_pems[0].write_to_path(str(self.pki / "apiserver.crt"))
        identities = {ADMIN: "system:masters", CONTROLLER_MANAGER: "system:masters"}
        identities.update({user: "shepherd:users" for user in self.users})
        for user, group in identities.items():
            # The user is the certificate's CN, its group the O; the SAN only satisfies the library.
            cert = ca.issue_cert(
                f"{file_name(user)}.users.shepherd.lab", common_name=user, organization_name=group
            )
            cert.private_key_pem.write_to_path(str(self.pki / f"{file_name(user)}.key"))
            cert.cert_chain_pems[0].write_to_path(str(self.pki / f"{file_name(user)}.crt"))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.pki / "sa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        (self.pki / "sa.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return ca

    def _client_certificate(self, user: str) -> dict[str, str]:
        return {
            "client-certificate-data": _b64(self.pki / f"{file_name(user)}.crt"),
            "client-key-data": _b64(self.pki / f"{file_name(user)}.key"),
        }

    def _kubeconfig_document(self, contexts: Mapping[str, Mapping[str, str]], current: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "shepherd-lab",
                    "cluster": {"server": self.url, "certificate-authority-data": _b64(self.pki / "ca.crt")},
                }
            ],
            "users": [{"name": name, "user": dict(credentials)} for name, credentials in contexts.items()],
            "contexts": [
                {"name": name, "context": {"cluster": "shepherd-lab", "user": name}} for name in contexts
            ],
            "current-context": current,
        }

    def _write_kubeconfig(self, ca: trustme.CA) -> None:
        # The port is chosen before the kubeconfig is written; the API server is started on it next.
        self.port = self.port or free_port()
        contexts = {"admin": self._client_certificate(ADMIN)}
        contexts.update({user: self._client_certificate(user) for user in self.users})
        self.kubeconfig.write_text(yaml.safe_dump(self._kubeconfig_document(contexts, "admin")))
        controller = {"controller-manager": self._client_certificate(CONTROLLER_MANAGER)}
        (self.workdir / "controller-manager.kubeconfig").write_text(
            yaml.safe_dump(self._kubeconfig_document(controller, "controller-manager"))
        )

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        log = self.logs / f"{name}.log"
        self.processes.append(Process(name, spawn([str(self.bin_dir / name), *args], log), log))

    def _start_etcd(self) -> str:
        client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        self._spawn(
            "etcd",
            [
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        return client

    def _start_apiserver(self, etcd: str) -> None:
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # The `kubernetes` Service's endpoints may not be loopback addresses; nothing here needs them.
                "--endpoint-reconciler-type=none",
                f"--secure-port={self.port}",
                f"--tls-cert-file={self.pki / 'apiserver.crt'}",
                f"--tls-private-key-file={self.pki / 'apiserver.key'}",
                f"--client-ca-file={self.pki / 'ca.crt'}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={self.pki / 'sa.pub'}",
                f"--service-account-signing-key-file={self.pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                "--profiling=false",
                *self._audit_args(),
                *self.apiserver_args,
            ],
        )

    def _audit_args(self) -> list[str]:
        if not self.audit:
            return []
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],
            # Events with their body, so that a bench can tell them apart by reason; the rest by metadata.
            "rules": [
                {
                    "level": "Request",
                    "verbs": ["create"],
                    "resources": [{"group": "", "resources": ["events"]}],
                },
                {"level": "Metadata"},
            ],
        }
        (self.workdir / "audit-policy.yaml").write_text(yaml.safe_dump(policy))
        return [
            f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
        ]

    def _start_controller_manager(self) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--root-ca-file={self.pki / 'ca.crt'}",
                f"--service-account-private-key-file={self.pki / 'sa.key'}",
                "--leader-elect=false",
                "--secure-port=0",
                # Deployments and Jobs are what the stories watch: answer their changes without delay.
                "--concurrent-deployment-syncs=10",
                "--concurrent-job-syncs=10",
                # Its default of 20 requests a second would make thousands of Releases (the scale bench)
                # wait on the controllers, not on the operator.
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
            ],
        )

    def _admin_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(str(self.pki / f"{ADMIN}.crt"), str(self.pki / f"{ADMIN}.key"))
        return context

    def _wait(self, url: str, deadline: float, name: str, *, tls: bool) -> None:
        last = "no answer yet"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                context = self._admin_tls() if tls else None
                with urllib.request.urlopen(url, context=context, timeout=5) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError) as error:
                last = str(error)
            time.sleep(0.2)
        raise ControlPlaneError(f"{name} was not ready at {url} in time ({last})\n{self.log_tail()}")

    def _wait_for_default_service_account(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
                return
            except ControlPlaneError:
                time.sleep(0.2)
        raise ControlPlaneError(
            f"kube-controller-manager did not create the default ServiceAccount in time\n{self.log_tail()}"
        )

    def _check_alive(self) -> None:
        for process in self.processes:
            code = process.popen.poll()
            if code is not None:
                raise ControlPlaneError(f"{process.name} exited with {code}\n{self.log_tail()}")


# The standard channel of the Gateway API: `make gateway-api-crds` copies its files, names kept, from the
# sigs.k8s.io/gateway-api module pinned in controlplane/go.mod, with a VERSION file naming that version.
BUNDLE_VERSION_ANNOTATION = "gateway.networking.k8s.io/bundle-version"
CHANNEL_ANNOTATION = "gateway.networking.k8s.io/channel"
# Where each kind a Gateway API bundle holds is applied (cluster-scoped, server-side apply).
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
BUNDLE_KINDS = {
    "CustomResourceDefinition": "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "ValidatingAdmissionPolicy": f"{ADMISSION}/validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": f"{ADMISSION}/validatingadmissionpolicybindings",
}
FIELD_MANAGER = "shepherd-lab"


@dataclass(frozen=True)
class GatewayAPIBundle:
    """What install_gateway_api_crds applied: the bundle's version and channel, each CRD, and how long
    applying them and waiting until each was Established and in discovery took."""

    version: str
    channel: str
    crds: tuple[str, ...]
    others: tuple[str, ...]
    seconds: float


def gateway_api_crds_problem(crd_dir: Path) -> str | None:
    """Why the Gateway API CRDs cannot be installed from crd_dir, or None when they can."""
    if not (crd_dir / "VERSION").is_file() or not any(crd_dir.glob("*.yaml")):
        return (
            f"no Gateway API CRDs in {crd_dir}; copy them from the pinned module with "
            "`make gateway-api-crds` (part of `make cluster-binaries`)"
        )
    return None


def install_gateway_api_crds(
    control_plane: ControlPlane, crd_dir: Path, *, timeout: float = 60.0
) -> GatewayAPIBundle:
    """Create every document of crd_dir/*.yaml as the admin (one already there is server-side applied,
    so installing again or another version is harmless), then wait until each CRD is Established and its
    resource is listed by discovery in each served version."""
    problem = gateway_api_crds_problem(crd_dir)
    if problem is not None:
        raise ControlPlaneError(problem)
    started = time.monotonic()
    documents = [
        document
        for path in sorted(crd_dir.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if document
    ]
    crds: list[dict[str, Any]] = []
    others: list[str] = []
    for document in documents:
        kind, name = document.get("kind"), document["metadata"]["name"]
        if kind not in BUNDLE_KINDS:
            raise ControlPlaneError(f"{crd_dir}: {kind} {name} is not a kind a Gateway API bundle holds")
        # A create costs the API server half of what an apply does on these large schemas (their managed
        # fields); the HTTPRoute CRD is too large for a client-side apply's last-applied annotation.
        try:
            control_plane.request("POST", f"{BUNDLE_KINDS[kind]}?fieldManager={FIELD_MANAGER}", document)
        except RequestError as error:
            if error.status != 409:
                raise
            control_plane.request(
                "PATCH",
                f"{BUNDLE_KINDS[kind]}/{name}?fieldManager={FIELD_MANAGER}&force=true",
                document,
                content_type="application/apply-patch+yaml",
            )
        if kind == "CustomResourceDefinition":
            crds.append(document)
        else:
            others.append(f"{kind}/{name}")
    if not crds:
        raise ControlPlaneError(f"{crd_dir} holds no CustomResourceDefinition")
    deadline = started + timeout
    for crd in crds:
        _wait_until_served(control_plane, crd, deadline)
    annotations = crds[0]["metadata"].get("annotations") or {}
    return GatewayAPIBundle(
        version=str(annotations.get(BUNDLE_VERSION_ANNOTATION, "")),
        channel=str(annotations.get(CHANNEL_ANNOTATION, "")),
        crds=tuple(sorted(crd["metadata"]["name"] for crd in crds)),
        others=tuple(others),
        seconds=time.monotonic() - started,
    )


def _wait_until_served(control_plane: ControlPlane, crd: Mapping[str, Any], deadline: float) -> None:
    name = crd["metadata"]["name"]
    group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
    versions = [v["name"] for v in crd["spec"]["versions"] if v.get("served")]
    last = "not read yet"
    while True:
        live = control_plane.request("GET", f"{BUNDLE_KINDS['CustomResourceDefinition']}/{name}")
        conditions = {c["type"]: c for c in (live.get("status") or {}).get("conditions") or []}
        established = conditions.get("Established", {}).get("status") == "True"
        last = json.dumps(list(conditions.values()))
        if established:
            missing = [v for v in versions if not _discovered(control_plane, group, v, plural)]
            if not missing:
                return
            last = f"Established, but discovery does not list {plural} in {', '.join(missing)} yet"
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"CRD {name} was not served in time: {last}")
        time.sleep(0.1)


def _discovered(control_plane: ControlPlane, group: str, version: str, plural: str) -> bool:
    try:
        listed = control_plane.request("GET", f"/apis/{group}/{version}")
    except ControlPlaneError:
        return False
    return any(resource.get("name") == plural for resource in listed.get("resources") or [])


def file_name(user: str) -> str:
    return user.replace(":", "-")


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
