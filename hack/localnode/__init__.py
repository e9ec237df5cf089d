"""localnode: a small node agent that plays the kubelet's part with local processes.

Dev and test tooling for mlplane (see hack/localnode/README.md): it registers a Node,
and runs the pods bound to it as processes, each pod in its own network namespace with
its own IP, its volumes bind-mounted in a private mount namespace per container.
"""
