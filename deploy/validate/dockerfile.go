package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher/ignorefile"
)

// runDockerfile parses a Dockerfile with BuildKit's own parser, runs BuildKit's build checks
// (the rules of `docker build --check`; any warning fails), and applies Tapline's rules. A
// <Dockerfile>.dockerignore beside it is parsed too.
func runDockerfile(args []string) error {
	if len(args) != 1 {
		return errors.New("need one Dockerfile")
	}
	file := args[0]
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var p problems
	res, err := parser.Parse(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	for _, w := range res.Warnings {
		p.add("parser: %s", w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		p.add("line %d: %s: %s", line, rule, msg)
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	checkStages(stages, metaArgs, &p)

	ignore := file + ".dockerignore"
	if f, err := os.Open(ignore); err == nil {
		patterns, err := ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			p.add("%s: %v", ignore, err)
		}
		for _, must := range []string{".git", ".data"} {
			found := false
			for _, pat := range patterns {
				if pat == must {
					found = true
				}
			}
			if !found {
				p.add("%s: must exclude %s", ignore, must)
			}
		}
	} else {
		p.add("no %s beside the Dockerfile", ignore)
	}
	if err := p.err(file); err != nil {
		return err
	}
	fmt.Printf("%s: %d stages valid\n", file, len(stages))
	return nil
}

func checkStages(stages []instructions.Stage, metaArgs []instructions.ArgCommand, p *problems) {
	if len(stages) < 2 {
		p.add("want a multi-stage build (build, then a minimal runtime)")
		return
	}
	args := map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				args[kv.Key] = *kv.Value
			}
		}
	}
	expand := func(s string) string {
		for k, v := range args {
			s = strings.ReplaceAll(s, "${"+k+"}", v)
			s = strings.ReplaceAll(s, "$"+k, v)
		}
		return s
	}
	build, final := stages[0], stages[len(stages)-1]
	if img := expand(build.BaseName); !strings.HasPrefix(img, "golang:1.26") {
		p.add("build stage FROM %s; want golang:1.26 (go.mod says go 1.26)", img)
	}
	var runs []string
	cgoOff := false
	for _, c := range build.Commands {
		switch c := c.(type) {
		case *instructions.RunCommand:
			runs = append(runs, strings.Join(c.CmdLine, " "))
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				if kv.Key == "CGO_ENABLED" && kv.Value == "0" {
					cgoOff = true
				}
			}
		}
	}
	all := strings.Join(runs, "\n")
	if strings.Contains(all, "CGO_ENABLED=0") {
		cgoOff = true
	}
	if !cgoOff {
		p.add("build stage: set CGO_ENABLED=0 for static binaries")
	}
	for _, want := range []string{"go build", "-trimpath", "-s -w", "./cmd/api", "./cmd/worker"} {
		if !strings.Contains(all, want) {
			p.add("build stage: no RUN contains %q", want)
		}
	}
	if !strings.HasPrefix(final.BaseName, "gcr.io/distroless/static") {
		p.add("final stage FROM %s; want gcr.io/distroless/static-debian12:nonroot", final.BaseName)
	}
	user, cmd := "", ""
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.CmdCommand:
			cmd = strings.Join(c.CmdLine, " ")
		case *instructions.EntrypointCommand:
			p.add("final stage: no ENTRYPOINT, so the command chooses api or worker")
		case *instructions.RunCommand:
			p.add("final stage: RUN in a distroless stage cannot work (no shell)")
		}
	}
	if user == "" || strings.HasPrefix(user, "root") || strings.HasPrefix(user, "0") {
		p.add("final stage: USER must be a non-root user (nonroot), got %q", user)
	}
	if cmd == "" {
		p.add("final stage: no CMD")
	}
}
