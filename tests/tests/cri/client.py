#!/usr/bin/python3
"""A CRI client suite written against the CRI API with Python grpcio (grpc-core), checking
kennel-cri the way clients outside the project find it.

Stubs are generated at start from api.proto (beside this file) with `grpc_tools.protoc` into a
temp directory. Every check runs over grpc-core's channel to `unix://<socket>` with its DEFAULT
options, then again with each `:authority` other gRPC clients send on a Unix socket (grpc-core
>= 1.57 sends the socket path percent-encoded, grpc-java and grpc-swift the raw path; Debian's
grpcio 1.51 sends `localhost`), so a server that refuses any of them fails here.

Run by tests/tests/cri.rs against its running kennel-cri, a ready sandbox and a running busybox
container (Debian: python3-grpcio, python3-grpc-tools; use /usr/bin/python3):

    client.py --socket S --sandbox ID --container ID --pod-ip IP [--long-name-pod LOGDIR]

Prints one line per check; exits 1 with the failed check named.
"""

import argparse
import json
import os
import sys
import tempfile
import urllib.parse

import grpc
from grpc_tools import protoc

UNKNOWN = "0" * 64
# A pod name that is no hostname: 67 characters, with '_' (kubelet would cut it; others do not).
LONG_NAME = "long_name_" + "x" * 57
# What kennel-cri makes of it: RFC 1123 characters, cut to 63.
LONG_NAME_HOSTNAME = "long-name-" + "x" * 53


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


def stubs():
    here = os.path.dirname(os.path.abspath(__file__))
    out = tempfile.mkdtemp(prefix="cri-stubs-")
    rc = protoc.main(
        ["protoc", "-I" + here, "--python_out=" + out, "--grpc_python_out=" + out, "api.proto"]
    )
    if rc != 0:
        sys.exit(f"grpc_tools.protoc failed on {here}/api.proto (exit {rc})")
    sys.path.insert(0, out)
    import api_pb2
    import api_pb2_grpc

    return api_pb2, api_pb2_grpc


def channels(socket):
    """(name, channel options) for each authority a client may send on a Unix socket."""
    return [
        ("grpcio defaults", []),
        (
            "grpc-core >= 1.57, unix:/// target",
            [("grpc.default_authority", urllib.parse.quote(socket.lstrip("/"), safe=""))],
        ),
        (
            "grpc-core >= 1.57, unix:/ target",
            [("grpc.default_authority", urllib.parse.quote(socket, safe=""))],
        ),
        ("grpc-java / grpc-swift (raw path)", [("grpc.default_authority", socket)]),
    ]


class Suite:
    def __init__(self, pb, grpc_mod, channel, args):
        self.pb = pb
        self.rt = grpc_mod.RuntimeServiceStub(channel)
        self.img = grpc_mod.ImageServiceStub(channel)
        self.args = args

    def runtime(self):
        pb = self.pb
        v = self.rt.Version(pb.VersionRequest(), timeout=60)
        check((v.runtime_name, v.runtime_api_version) == ("kennel", "v1"), f"Version: {v}")
        st = self.rt.Status(pb.StatusRequest(), timeout=60).status
        conds = {c.type: c.status for c in st.conditions}
        check(
            conds.get("RuntimeReady") and conds.get("NetworkReady"),
            f"Status conditions: {conds}",
        )

    def lists(self):
        pb, a = self.pb, self.args
        items = self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=60).items
        ours = [s for s in items if s.id == a.sandbox]
        check(len(ours) == 1, f"ListPodSandbox has {a.sandbox}: {[s.id for s in items]}")
        check(ours[0].state == pb.SANDBOX_READY, f"listed sandbox state {ours[0].state}")
        cs = self.rt.ListContainers(pb.ListContainersRequest(), timeout=60).containers
        check(
            any(c.id == a.container and c.state == pb.CONTAINER_RUNNING for c in cs),
            f"ListContainers has {a.container} running: {[(c.id, c.state) for c in cs]}",
        )
        by_sandbox = self.rt.ListContainers(
            pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=a.sandbox)),
            timeout=60,
        ).containers
        check(
            all(c.pod_sandbox_id == a.sandbox for c in by_sandbox) and by_sandbox,
            "ListContainers filtered by sandbox",
        )
        fs = self.img.ImageFsInfo(pb.ImageFsInfoRequest(), timeout=60).image_filesystems
        check(fs and fs[0].used_bytes.value > 0, f"ImageFsInfo: {fs}")
        images = self.img.ListImages(pb.ListImagesRequest(), timeout=60).images
        check(images, "ListImages lists the pulled images")

    def statuses(self):
        pb, a = self.pb, self.args
        s = self.rt.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=a.sandbox), timeout=60
        ).status
        check(s.id == a.sandbox and s.state == pb.SANDBOX_READY, f"PodSandboxStatus: {s}")
        check(s.network.ip == a.pod_ip, f"PodSandboxStatus IP {s.network.ip} != {a.pod_ip}")
        c = self.rt.ContainerStatus(
            pb.ContainerStatusRequest(container_id=a.container), timeout=60
        ).status
        check(c.id == a.container and c.state == pb.CONTAINER_RUNNING, f"ContainerStatus: {c}")
        check(c.image_ref.startswith("sha256:") and c.started_at > 0, f"ContainerStatus: {c}")
        try:
            self.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=UNKNOWN), timeout=60)
            check(False, "ContainerStatus of an unknown id succeeded")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.NOT_FOUND, f"ContainerStatus unknown: {e.code()}")

    def idempotence(self):
        pb = self.pb
        self.rt.StopContainer(pb.StopContainerRequest(container_id=UNKNOWN, timeout=0), timeout=60)
        self.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=UNKNOWN), timeout=60)
        self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=UNKNOWN), timeout=60)
        self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=UNKNOWN), timeout=60)

    def exec_sync(self):
        pb, a = self.pb, self.args
        r = self.rt.ExecSync(
            pb.ExecSyncRequest(
                container_id=a.container,
                cmd=["sh", "-c", "echo out; echo err >&2; exit 3"],
                timeout=120,
            ),
            timeout=240,
        )
        got = (r.exit_code, r.stdout, r.stderr)
        check(got == (3, b"out\n", b"err\n"), f"ExecSync: {got}")

    def long_name_pod(self, log_dir):
        """RunPodSandbox without a hostname and a name that is none (one VM restore)."""
        pb = self.pb
        cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(
                name=LONG_NAME, namespace="default", uid="uid-long-name", attempt=0
            ),
            log_directory=log_dir,
        )
        pod = self.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=240).pod_sandbox_id
        try:
            r = self.rt.PodSandboxStatus(
                pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True), timeout=60
            )
            check(r.status.state == pb.SANDBOX_READY, f"long-name sandbox: {r.status}")
            info = json.loads(r.info["info"])
            check(
                info.get("hostname") == LONG_NAME_HOSTNAME,
                f"long-name sandbox hostname {info.get('hostname')!r}",
            )
        finally:
            self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=240)
            self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=240)
        left = self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=60).items
        check(all(s.id != pod for s in left), "long-name sandbox removed")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", required=True)
    p.add_argument("--sandbox", required=True)
    p.add_argument("--container", required=True)
    p.add_argument("--pod-ip", required=True)
    p.add_argument("--long-name-pod", metavar="LOGDIR")
    args = p.parse_args()
    pb, grpc_mod = stubs()
    print(f"grpcio {grpc.__version__}, socket {args.socket}")
    failed = 0
    for i, (name, options) in enumerate(channels(args.socket)):
        channel = grpc.insecure_channel("unix://" + args.socket, options=options)
        suite = Suite(pb, grpc_mod, channel, args)
        checks = ["runtime", "lists", "statuses", "idempotence"]
        # The guest-side checks cost seconds of emulated kernel work: the default channel and
        # the authority of current grpc-core run them, the others the cheap ones.
        if i < 2:
            checks.append("exec_sync")
        for c in checks:
            try:
                getattr(suite, c)()
                print(f"ok   [{name}] {c}")
            except (CheckFailed, grpc.RpcError) as e:
                failed += 1
                detail = f"{e.code()}: {e.details()}" if isinstance(e, grpc.RpcError) else e
                print(f"FAIL [{name}] {c}: {detail}")
        if i == 1 and args.long_name_pod:
            try:
                suite.long_name_pod(args.long_name_pod)
                print(f"ok   [{name}] RunPodSandbox without hostname, name {LONG_NAME!r}")
            except (CheckFailed, grpc.RpcError) as e:
                failed += 1
                detail = f"{e.code()}: {e.details()}" if isinstance(e, grpc.RpcError) else e
                print(f"FAIL [{name}] long-name RunPodSandbox: {detail}")
        channel.close()
    if failed:
        print(f"{failed} check(s) failed")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
