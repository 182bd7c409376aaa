// Command deploycheck validates Tapline's deployment files offline. deploy/validate.sh drives
// it; it lives in its own module so its dependencies (compose-go, BuildKit's Dockerfile
// parser) stay out of the application's go.mod.
//
//	deploycheck k8s-schemas -swagger swagger.json -out DIR
//	    turn Kubernetes' OpenAPI v2 document into kubeconform's schema layout
//	    (DIR/<kind>[-<group>]-<version>.json, standalone, strict)
//	deploycheck k8s-policy FILE...
//	    Tapline's own rules on rendered manifests (probes, security context, drain, egress)
//	deploycheck compose [-env-file FILE] FILE
//	    load a Compose file with compose-go (the Compose spec schema) and apply Tapline's rules
//	deploycheck dockerfile FILE
//	    parse a Dockerfile with BuildKit's parser and linter and apply Tapline's rules
//
// Every subcommand prints what it found wrong and exits 1 when anything was.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "k8s-schemas":
		err = runK8sSchemas(args)
	case "k8s-policy":
		err = runK8sPolicy(args)
	case "compose":
		err = runCompose(args)
	case "dockerfile":
		err = runDockerfile(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "deploycheck %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: deploycheck k8s-schemas|k8s-policy|compose|dockerfile ...")
	os.Exit(2)
}

// problems collects rule violations so a run reports all of them at once.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) err(what string) error {
	if len(p) == 0 {
		return nil
	}
	for _, s := range p {
		fmt.Fprintf(os.Stderr, "  %s: %s\n", what, s)
	}
	return fmt.Errorf("%d problem(s) in %s", len(p), what)
}
