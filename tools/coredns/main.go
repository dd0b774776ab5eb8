// Command coredns is CoreDNS with the plugins a kind cluster's Corefile uses
// (minus forward: the lab has no upstream resolver). Registering a plugin is
// importing its package; dnsserver.Directives sets their order.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func init() {
	dnsserver.Directives = []string{"reload", "health", "ready", "errors", "log", "loadbalance", "cache", "loop", "kubernetes"}
}

func main() { coremain.Run() }
