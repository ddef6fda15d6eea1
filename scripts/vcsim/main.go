// Command vcsim serves govmomi's vSphere API simulator for vmpooler's tests and benchmarks.
//
// It is built offline from Debian's golang-github-vmware-govmomi-dev sources by scripts/build-vcsim.sh.
// It prints one line "VCSIM_URL=<url>" once the server listens, then serves until SIGINT or SIGTERM.
//
// Besides govmomi's VPX model it gives every host a distinct, deterministic load (-host-load) and a
// green overall status, as a real vCenter reports, so host selection has something to rank.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func main() {
	model := simulator.VPX()
	flag.IntVar(&model.Datacenter, "dc", model.Datacenter, "datacenters")
	flag.IntVar(&model.Cluster, "cluster", model.Cluster, "clusters per datacenter")
	flag.IntVar(&model.ClusterHost, "host", model.ClusterHost, "hosts per cluster")
	flag.IntVar(&model.Host, "standalone-host", model.Host, "standalone hosts per datacenter")
	flag.IntVar(&model.Machine, "vm", model.Machine, "VMs per resource pool")
	flag.IntVar(&model.Datastore, "ds", model.Datastore, "datastores")
	flag.IntVar(&model.Portgroup, "pg", model.Portgroup, "distributed port groups per datacenter")
	listen := flag.String("l", "127.0.0.1:0", "listen address (port 0: a free port)")
	username := flag.String("username", "user", "the only user name accepted")
	password := flag.String("password", "pass", "its password")
	plain := flag.Bool("http", false, "serve plain HTTP instead of HTTPS")
	delay := flag.Int("delay", 0, "milliseconds added to every call")
	methodDelay := flag.String("method-delay", "", "per-method delays, e.g. CloneVM_Task=200,RetrieveProperties=5")
	hostLoad := flag.String("host-load", "", "cpu%:mem% per host in name order, e.g. 10:20,50:40 (default: defaultLoads)")
	flag.Parse()

	model.DelayConfig.Delay = *delay
	model.DelayConfig.MethodDelay = parseDelays(*methodDelay)
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: create model: %v", err)
	}
	defer model.Remove()
	setHostLoads(parseLoads(*hostLoad))

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}
	if !*plain {
		model.Service.TLS = new(tls.Config)
	}
	server := model.Service.NewServer()
	defer server.Close()

	fmt.Printf("VCSIM_URL=%s\n", server.URL)
	os.Stdout.Sync()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
}

func parseDelays(spec string) map[string]int {
	delays := map[string]int{}
	for _, item := range strings.Split(spec, ",") {
		if item == "" {
			continue
		}
		name, ms, ok := strings.Cut(item, "=")
		value, err := strconv.Atoi(ms)
		if !ok || err != nil {
			log.Fatalf("vcsim: bad -method-delay item %q", item)
		}
		delays[name] = value
	}
	return delays
}

type load struct{ cpu, mem float64 }

// defaultLoads are clear of each other and of their averages: 10, 20 and 60 % CPU average 30 %.
var defaultLoads = []load{{10, 30}, {20, 40}, {60, 50}, {35, 20}, {50, 60}, {70, 70}}

func parseLoads(spec string) []load {
	var loads []load
	for _, item := range strings.Split(spec, ",") {
		if item == "" {
			continue
		}
		cpu, mem, ok := strings.Cut(item, ":")
		c, err1 := strconv.ParseFloat(cpu, 64)
		m, err2 := strconv.ParseFloat(mem, 64)
		if !ok || err1 != nil || err2 != nil {
			log.Fatalf("vcsim: bad -host-load item %q", item)
		}
		loads = append(loads, load{c, m})
	}
	return loads
}

// setHostLoads sets quickStats (MHz and MB used) from percentages of each host's capacity, in host name order.
func setHostLoads(loads []load) {
	var hosts []*simulator.HostSystem
	for _, entity := range simulator.Map.All("HostSystem") {
		hosts = append(hosts, entity.(*simulator.HostSystem))
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
	for i, host := range hosts {
		l := defaultLoads[i%len(defaultLoads)]
		if i < len(loads) {
			l = loads[i]
		}
		hw := host.Summary.Hardware
		cpuCapacity := float64(hw.CpuMhz) * float64(hw.NumCpuCores)
		memCapacity := float64(hw.MemorySize) / 1024 / 1024
		host.Summary.QuickStats.OverallCpuUsage = int32(cpuCapacity * l.cpu / 100)
		host.Summary.QuickStats.OverallMemoryUsage = int32(memCapacity * l.mem / 100)
		host.Summary.OverallStatus = types.ManagedEntityStatusGreen
		host.OverallStatus = types.ManagedEntityStatusGreen
	}
}
