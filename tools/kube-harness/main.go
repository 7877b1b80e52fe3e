// Command kube-harness is keyward's real control plane for tests: embedded etcd,
// kube-apiserver and kube-controller-manager, built from Kubernetes' own Go modules
// and run on loopback only.
//
// It is a multi-call binary, one component per process (the components install
// process-wide signal handlers, feature gates and logging state):
//
//	kube-harness up --dir DIR          etcd in this process, the API server and the
//	                                   controller manager as child processes of it
//	kube-harness kube-apiserver ...    the upstream command, flags as upstream
//	kube-harness kube-controller-manager ...
//	kube-harness crd-cost FILE         every CEL rule's estimated cost next to its limit
//	kube-harness fault-proxy ...       a seeded fault-injecting proxy to the API server
//
// `up` prints one JSON line on stdout once /readyz answers 200 and stops cleanly on
// SIGTERM or SIGINT, or when its standard input closes (the test process that
// started it died), leaving no process behind.
package main

import (
	"fmt"
	"os"

	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	sub, args := os.Args[1], os.Args[2:]
	switch sub {
	case "up":
		os.Exit(up(args))
	case "kube-apiserver":
		exitWithParent()
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		exitWithParent()
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "crd-cost":
		os.Exit(crdCost(args))
	case "fault-proxy":
		os.Exit(faultProxyMain(args))
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "kube-harness: unknown command %q\n", sub)
		usage()
		os.Exit(2)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  kube-harness up --dir DIR [--etcd-dir DIR]   start etcd, kube-apiserver and kube-controller-manager on loopback
  kube-harness crd-cost FILE                  validate a CRD as the API server does; print each CEL rule's cost
  kube-harness fault-proxy --upstream URL --ca FILE [--listen ADDR] [--seed N] [--rate P]
                                              a seeded fault-injecting proxy to the API server (see faultproxy.go)
  kube-harness kube-apiserver FLAGS...        the upstream component (used by up)
  kube-harness kube-controller-manager FLAGS...
`)
}
