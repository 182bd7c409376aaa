package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// runCompose loads a Compose file the way `docker compose config` does (compose-go: the
// Compose spec JSON schema, interpolation, env_file parsing, depends_on consistency), then
// applies Tapline's rules.
func runCompose(args []string) error {
	fs := flag.NewFlagSet("compose", flag.ContinueOnError)
	var env stringList
	fs.Var(&env, "env", "NAME=VALUE for interpolation (repeatable)")
	quiet := fs.Bool("quiet", false, "print problems only")
	envOut := fs.String("env-out", "", "write each Tapline service's environment to DIR/compose_<service>.env")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("need one compose file")
	}
	file, err := filepath.Abs(fs.Arg(0))
	if err != nil {
		return err
	}
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithName("tapline"),
		cli.WithEnv(env),
		cli.WithDotEnv,
		cli.WithInterpolation(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	var p problems
	checkProject(project, &p)
	if *envOut != "" {
		if err := writeComposeEnvs(project, *envOut); err != nil {
			return err
		}
	}
	if err := p.err("compose"); err != nil {
		return err
	}
	if !*quiet {
		fmt.Printf("%s: %d services valid\n", fs.Arg(0), len(project.Services))
	}
	return nil
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func checkProject(project *types.Project, p *problems) {
	var migrate string
	var apis, workers []types.ServiceConfig
	for name, s := range project.Services {
		cmd := strings.Join(s.Command, " ")
		switch {
		case strings.HasSuffix(cmd, "api migrate"):
			migrate = name
		case strings.HasSuffix(cmd, "/api") || cmd == "api":
			apis = append(apis, s)
		case strings.HasSuffix(cmd, "/worker") || cmd == "worker":
			workers = append(workers, s)
		}
	}
	if migrate == "" {
		p.add("no service runs `api migrate`")
	}
	if n := len(apis); n < 2 {
		p.add("%d api service(s); want at least 2 behind the load balancer", n)
	}
	if n := len(workers); n == 0 {
		p.add("no worker service")
	}
	for _, s := range append(append([]types.ServiceConfig{}, apis...), workers...) {
		if migrate != "" {
			dep, ok := s.DependsOn[migrate]
			if !ok || dep.Condition != types.ServiceConditionCompletedSuccessfully {
				p.add("%s: must depend on %s with condition service_completed_successfully", s.Name, migrate)
			}
		}
		if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0 {
			p.add("%s: no healthcheck", s.Name)
		}
		if _, ok := s.Environment["TAPLINE_MIGRATE_DATABASE_URL"]; ok {
			p.add("%s: only the migrate service gets the owner URL TAPLINE_MIGRATE_DATABASE_URL", s.Name)
		}
		for _, v := range []string{"TAPLINE_DATABASE_URL", "TAPLINE_REDIS_URL", "TAPLINE_SECRET_KEY"} {
			if val := s.Environment[v]; val == nil || *val == "" {
				p.add("%s: %s is not set", s.Name, v)
			}
		}
		if !s.ReadOnly {
			p.add("%s: set read_only: true", s.Name)
		}
	}
	for _, s := range workers {
		shutdown := 20 * time.Second
		if v := s.Environment["TAPLINE_SHUTDOWN_TIMEOUT"]; v != nil && *v != "" {
			d, err := time.ParseDuration(*v)
			if err != nil {
				p.add("%s: TAPLINE_SHUTDOWN_TIMEOUT %q is not a duration", s.Name, *v)
				continue
			}
			shutdown = d
		}
		if s.StopGracePeriod == nil {
			p.add("%s: set stop_grace_period to TAPLINE_SHUTDOWN_TIMEOUT (%s) + margin; Docker's default 10s kills a draining worker", s.Name, shutdown)
		} else if g := time.Duration(*s.StopGracePeriod); g < shutdown+drainMargin {
			p.add("%s: stop_grace_period %s is shorter than TAPLINE_SHUTDOWN_TIMEOUT (%s) + %s", s.Name, g, shutdown, drainMargin)
		}
	}
	if s, ok := project.Services[migrate]; ok {
		if v := s.Environment["TAPLINE_MIGRATE_DATABASE_URL"]; v == nil || *v == "" {
			p.add("%s: set TAPLINE_MIGRATE_DATABASE_URL (the tables' owner)", migrate)
		}
	}
	// Every file a service mounts from the project directory exists.
	for _, s := range project.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				p.add("%s: bind mount source %s: %v", s.Name, v.Source, err)
			}
		}
	}
}

// writeComposeEnvs writes the environment of every service that runs a Tapline binary, one
// NAME=VALUE a line, for validate.sh to feed to the real configuration loader.
func writeComposeEnvs(project *types.Project, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, s := range project.Services {
		if len(s.Command) == 0 || !strings.HasPrefix(s.Command[0], "/usr/local/bin/") {
			continue
		}
		keys := make([]string, 0, len(s.Environment))
		for k := range s.Environment {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			if v := s.Environment[k]; v != nil {
				fmt.Fprintf(&b, "%s=%s\n", k, *v)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "compose_"+name+".env"), []byte(b.String()), 0o600); err != nil {
			return err
		}
	}
	return nil
}
