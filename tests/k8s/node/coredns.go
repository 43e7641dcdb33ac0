// CoreDNS for the test cluster (tests/k8s/cluster.sh) with only the plugins its Corefile uses.
// The upstream main links every plugin, including the cloud ones (Route 53, Azure, Cloud DNS),
// whose SDKs would multiply the download and the compile; plugins register themselves when
// imported, so this list is the whole build-time configuration.
package main

import (
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"

	"github.com/coredns/coredns/coremain"
)

func main() {
	coremain.Run()
}
