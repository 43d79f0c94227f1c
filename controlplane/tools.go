//go:build tools

// The binaries this module builds from other modules' main packages; listing
// them here keeps `go mod tidy` from dropping their requirements.
package cluster

import (
	_ "helm.sh/helm/v4/cmd/helm"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "sigs.k8s.io/gateway-api/pkg/consts"
)
