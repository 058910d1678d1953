package programs

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// runDNSClient resolves names every --interval (env INTERVAL, default 1s)
// through the pod's nameserver, with its search list and ndots, and logs
// every failure with its reason (SERVFAIL, NXDOMAIN, i/o timeout) and
// successes at most every 30s per name. Names come from the arguments or
// $NAMES; --server, --search and --ndots override the pod's configuration
// (EnvDNSServer, EnvDNSSearch, EnvDNSNdots).
func runDNSClient(ctx context.Context, env Env, args []string) error {
	fs := flagSet(DNSClient)
	interval := fs.Duration("interval", 0, "time between rounds of lookups (default $INTERVAL or 1s)")
	server := fs.String("server", "", "nameserver IP[:port] (default $"+EnvDNSServer+")")
	search := fs.String("search", "", "search list, space-separated (default $"+EnvDNSSearch+")")
	ndots := fs.Int("ndots", -1, "ndots (default $"+EnvDNSNdots+" or 1)")
	timeout := fs.Duration("timeout", DefaultLookupTimeout, "timeout of one query")
	if err := parse(fs, args); err != nil {
		return err
	}
	names := append(fs.Args(), splitList(env.getenv("NAMES"))...)
	if len(names) == 0 {
		return fmt.Errorf("no name to resolve: pass them as arguments or in $NAMES")
	}
	var err error
	if *interval == 0 {
		if *interval, err = envDuration(env, "INTERVAL", time.Second); err != nil {
			return err
		}
	}
	// Flags win over the pod's configuration.
	vars := append([]string(nil), env.environ()...)
	if *server != "" {
		vars = append(vars, EnvDNSServer+"="+*server)
	}
	if *search != "" {
		vars = append(vars, EnvDNSSearch+"="+*search)
	}
	if *ndots >= 0 {
		vars = append(vars, fmt.Sprintf("%s=%d", EnvDNSNdots, *ndots))
	}
	lookup, ok, err := LookupFromEnv(Env{Vars: vars}.getenv)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no nameserver: pass --server or set %s", EnvDNSServer)
	}
	lookup.Timeout = *timeout
	log := env.logger()
	log.Info("resolving", "names", strings.Join(names, " "), "server", lookup.Server,
		"search", strings.Join(lookup.Search, " "), "ndots", lookup.Ndots, "interval", interval.String())
	resolveLoop(ctx, log, lookup, names, *interval)
	return nil
}
