package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Ranges a worker must never reach even though it may reach the rest of the internet
// (research/perf_sec.md §3.1). The application's SSRF guard refuses them at dial time; the
// NetworkPolicy is the second wall.
var (
	privateV4 = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"}
	privateV6 = []string{"fc00::/7", "fe80::/10"}
)

// drainMargin is how much longer than TAPLINE_SHUTDOWN_TIMEOUT a worker must be given to
// exit before it is killed: after the drain it flushes its spans for up to 5 s
// (telemetry.FlushTimeout), then exits.
const drainMargin = 6 * time.Second

type object map[string]any

func (o object) str(path ...string) string {
	v, _ := dig(o, path...).(string)
	return v
}

func (o object) id() string {
	return o.str("kind") + "/" + o.str("metadata", "name")
}

func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			if om, ok2 := v.(object); ok2 {
				m = om
			} else {
				return nil
			}
		}
		v = m[p]
	}
	return v
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func mapping(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// runK8sPolicy applies Tapline's rules to rendered manifests (the output of kustomize build).
// With -env-out DIR it also writes, for every container of every workload, the environment
// the container would get (ConfigMap, Secret, literal and downward-API values resolved) to
// DIR/<manifest>_<workload>_<container>.env, one NAME=VALUE a line, for validate.sh to feed
// to the real configuration loader.
func runK8sPolicy(args []string) error {
	fs := flag.NewFlagSet("k8s-policy", flag.ContinueOnError)
	envOut := fs.String("env-out", "", "write each container's resolved environment here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("need manifest files")
	}
	var all problems
	for _, file := range fs.Args() {
		objs, err := readObjects(file)
		if err != nil {
			return err
		}
		var p problems
		checkObjects(objs, &p)
		if *envOut != "" {
			if err := writeEnvs(objs, *envOut, strings.TrimSuffix(filepath.Base(file), filepath.Ext(file)), &p); err != nil {
				return err
			}
		}
		for _, s := range p {
			all.add("%s: %s", file, s)
		}
	}
	if err := all.err("k8s policy"); err != nil {
		return err
	}
	fmt.Printf("%d manifest file(s) follow Tapline's rules\n", fs.NArg())
	return nil
}

// writeEnvs resolves each workload container's environment the way the kubelet would.
func writeEnvs(objs []object, dir, prefix string, p *problems) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	configMaps := map[string]map[string]string{}
	secrets := map[string]map[string]string{}
	for _, o := range objs {
		name := o.str("metadata", "name")
		switch o.str("kind") {
		case "ConfigMap":
			m := map[string]string{}
			for k, v := range mapping(o["data"]) {
				m[k] = fmt.Sprint(v)
			}
			configMaps[name] = m
		case "Secret":
			m := map[string]string{}
			for k, v := range mapping(o["stringData"]) {
				m[k] = fmt.Sprint(v)
			}
			for k, v := range mapping(o["data"]) {
				b, err := base64.StdEncoding.DecodeString(fmt.Sprint(v))
				if err != nil {
					p.add("%s: data.%s is not base64", o.id(), k)
					continue
				}
				m[k] = string(b)
			}
			secrets[name] = m
		}
	}
	fake := map[string]string{"status.podIP": "10.1.2.3", "metadata.name": "tapline-pod-0", "metadata.namespace": "tapline", "spec.nodeName": "node-0"}
	for _, o := range objs {
		kind := o.str("kind")
		if kind != "Deployment" && kind != "Job" {
			continue
		}
		for _, c := range containers(mapping(dig(o, "spec", "template", "spec"))) {
			var names []string
			env := map[string]string{}
			set := func(k, v string) {
				if _, ok := env[k]; !ok {
					names = append(names, k)
				}
				env[k] = v
			}
			for _, ef := range list(c["envFrom"]) {
				if ref, _ := dig(ef, "configMapRef", "name").(string); ref != "" {
					cm, ok := configMaps[ref]
					if !ok {
						p.add("%s: envFrom ConfigMap %q does not exist", o.id(), ref)
					}
					for _, k := range sortedKeys(cm) {
						set(k, cm[k])
					}
				}
				if ref, _ := dig(ef, "secretRef", "name").(string); ref != "" {
					s, ok := secrets[ref]
					if !ok {
						p.add("%s: envFrom Secret %q does not exist", o.id(), ref)
					}
					for _, k := range sortedKeys(s) {
						set(k, s[k])
					}
				}
			}
			for _, e := range list(c["env"]) {
				e := mapping(e)
				name := fmt.Sprint(e["name"])
				if v, ok := e["value"]; ok {
					set(name, expandEnv(fmt.Sprint(v), env))
					continue
				}
				if ref, _ := dig(e, "valueFrom", "secretKeyRef").(map[string]any); ref != nil {
					s, ok := secrets[fmt.Sprint(ref["name"])]
					v, has := s[fmt.Sprint(ref["key"])]
					if !ok || !has {
						if ref["optional"] != true {
							p.add("%s: env %s: Secret %v has no key %v", o.id(), name, ref["name"], ref["key"])
						}
						continue
					}
					set(name, v)
					continue
				}
				if ref, _ := dig(e, "valueFrom", "configMapKeyRef").(map[string]any); ref != nil {
					cm, ok := configMaps[fmt.Sprint(ref["name"])]
					v, has := cm[fmt.Sprint(ref["key"])]
					if !ok || !has {
						if ref["optional"] != true {
							p.add("%s: env %s: ConfigMap %v has no key %v", o.id(), name, ref["name"], ref["key"])
						}
						continue
					}
					set(name, v)
					continue
				}
				if fp, _ := dig(e, "valueFrom", "fieldRef", "fieldPath").(string); fp != "" {
					set(name, fake[fp])
					continue
				}
				set(name, "")
			}
			var b strings.Builder
			for _, k := range names {
				if strings.ContainsAny(env[k], "\n\x00") {
					p.add("%s: env %s contains a newline", o.id(), k)
					continue
				}
				fmt.Fprintf(&b, "%s=%s\n", k, env[k])
			}
			file := filepath.Join(dir, fmt.Sprintf("%s_%s_%v.env", prefix, o.str("metadata", "name"), c["name"]))
			if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}

// expandEnv replaces $(NAME) with earlier variables, as the kubelet does.
func expandEnv(v string, env map[string]string) string {
	for k, val := range env {
		v = strings.ReplaceAll(v, "$("+k+")", val)
	}
	return v
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func readObjects(file string) ([]object, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var objs []object
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if m == nil {
			continue
		}
		if strings.HasSuffix(fmt.Sprint(m["kind"]), "List") {
			for _, it := range list(m["items"]) {
				objs = append(objs, object(mapping(it)))
			}
			continue
		}
		objs = append(objs, object(m))
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("%s: no objects", file)
	}
	return objs, nil
}

func checkObjects(objs []object, p *problems) {
	byKind := map[string][]object{}
	for _, o := range objs {
		byKind[o.str("kind")] = append(byKind[o.str("kind")], o)
	}
	for _, kind := range []string{"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job", "NetworkPolicy", "Ingress"} {
		if len(byKind[kind]) == 0 {
			p.add("no %s", kind)
		}
	}
	config := map[string]string{}
	for _, cm := range byKind["ConfigMap"] {
		for k, v := range mapping(cm["data"]) {
			config[k] = fmt.Sprint(v)
		}
	}
	shutdown := 20 * time.Second
	if s := config["TAPLINE_SHUTDOWN_TIMEOUT"]; s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			p.add("ConfigMap TAPLINE_SHUTDOWN_TIMEOUT %q is not a duration", s)
		} else {
			shutdown = d
		}
	}

	components := map[string]object{} // component label → Deployment
	var templates []map[string]any    // pod template labels, for Service and PDB selectors
	for _, o := range append(append([]object{}, byKind["Deployment"]...), byKind["Job"]...) {
		tpl := mapping(dig(o, "spec", "template"))
		labels := mapping(dig(tpl, "metadata", "labels"))
		templates = append(templates, labels)
		comp, _ := labels["app.kubernetes.io/component"].(string)
		if o.str("kind") == "Deployment" {
			if comp == "" {
				p.add("%s: pod template has no app.kubernetes.io/component label", o.id())
			}
			components[comp] = o
		}
		checkPodSpec(o, comp, mapping(tpl["spec"]), shutdown, p)
	}
	for _, comp := range []string{"api", "worker"} {
		if components[comp] == nil {
			p.add("no Deployment with component %q", comp)
		}
	}
	if api := components["api"]; api != nil {
		if r, ok := dig(api, "spec", "replicas").(int); ok && r < 2 {
			p.add("%s: replicas %d; run at least 2", api.id(), r)
		}
	}
	migrates := 0
	for _, j := range byKind["Job"] {
		c := containers(mapping(dig(j, "spec", "template", "spec")))
		if len(c) > 0 && strings.Contains(strings.Join(commandOf(c[0]), " "), "migrate") {
			migrates++
			if !hasEnv(c[0], "TAPLINE_MIGRATE_DATABASE_URL") {
				p.add("%s: the migration Job needs TAPLINE_MIGRATE_DATABASE_URL (the tables' owner)", j.id())
			}
		}
	}
	if migrates == 0 {
		p.add("no Job runs `api migrate`")
	}

	// Every Deployment is covered by a PodDisruptionBudget; the api by an HPA.
	for comp, d := range components {
		labels := mapping(dig(d, "spec", "template", "metadata", "labels"))
		covered := false
		for _, pdb := range byKind["PodDisruptionBudget"] {
			if selects(mapping(dig(pdb, "spec", "selector", "matchLabels")), labels) {
				covered = true
			}
		}
		if !covered {
			p.add("%s: no PodDisruptionBudget selects component %s", d.id(), comp)
		}
	}
	if api := components["api"]; api != nil {
		found := false
		for _, h := range byKind["HorizontalPodAutoscaler"] {
			ref := mapping(dig(h, "spec", "scaleTargetRef"))
			if ref["kind"] == "Deployment" && ref["name"] == api.str("metadata", "name") {
				found = true
			}
		}
		if !found {
			p.add("no HorizontalPodAutoscaler scales %s", api.id())
		}
	}
	// Services select pods that exist and Ingress backends name Services that exist.
	services := map[string]object{}
	for _, s := range byKind["Service"] {
		services[s.str("metadata", "name")] = s
		sel := mapping(dig(s, "spec", "selector"))
		ok := false
		for _, l := range templates {
			if len(sel) > 0 && selects(sel, l) {
				ok = true
			}
		}
		if !ok {
			p.add("%s: selector matches no pod template", s.id())
		}
	}
	metricsDenied := false
	for _, ing := range byKind["Ingress"] {
		ann := mapping(dig(ing, "metadata", "annotations"))
		for _, r := range list(dig(ing, "spec", "rules")) {
			for _, path := range list(dig(r, "http", "paths")) {
				name, _ := dig(path, "backend", "service", "name").(string)
				if services[name] == nil {
					p.add("%s: backend Service %q does not exist", ing.id(), name)
				}
				switch mapping(path)["path"] {
				case "/":
					if ann["nginx.ingress.kubernetes.io/proxy-buffering"] != "off" {
						p.add("%s: SSE needs nginx.ingress.kubernetes.io/proxy-buffering: \"off\"", ing.id())
					}
					if ann["nginx.ingress.kubernetes.io/proxy-read-timeout"] == nil {
						p.add("%s: SSE needs a long nginx.ingress.kubernetes.io/proxy-read-timeout", ing.id())
					}
				case "/metrics":
					if strings.Contains(fmt.Sprint(ann["nginx.ingress.kubernetes.io/denylist-source-range"]), "0.0.0.0/0") {
						metricsDenied = true
					}
				}
			}
		}
	}
	if len(byKind["Ingress"]) > 0 && !metricsDenied {
		p.add("the api's unauthenticated /metrics is reachable through the Ingress; deny it there")
	}
	checkNetworkPolicies(byKind["NetworkPolicy"], components, p)
}

func selects(selector, labels map[string]any) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func containers(spec map[string]any) []map[string]any {
	var out []map[string]any
	for _, key := range []string{"initContainers", "containers"} {
		for _, c := range list(spec[key]) {
			out = append(out, mapping(c))
		}
	}
	return out
}

func commandOf(c map[string]any) []string {
	var out []string
	for _, key := range []string{"command", "args"} {
		for _, a := range list(c[key]) {
			out = append(out, fmt.Sprint(a))
		}
	}
	return out
}

func hasEnv(c map[string]any, name string) bool {
	for _, e := range list(c["env"]) {
		if mapping(e)["name"] == name {
			return true
		}
	}
	return false
}

func checkPodSpec(o object, comp string, spec map[string]any, shutdown time.Duration, p *problems) {
	id := o.id()
	if spec == nil {
		p.add("%s: no pod template spec", id)
		return
	}
	psc := mapping(spec["securityContext"])
	if psc["runAsNonRoot"] != true {
		p.add("%s: pod securityContext.runAsNonRoot must be true", id)
	}
	if dig(psc, "seccompProfile", "type") != "RuntimeDefault" {
		p.add("%s: pod securityContext.seccompProfile.type must be RuntimeDefault", id)
	}
	if spec["automountServiceAccountToken"] != false {
		p.add("%s: automountServiceAccountToken must be false (Tapline never calls the Kubernetes API)", id)
	}
	cs := containers(spec)
	if len(cs) == 0 {
		p.add("%s: no containers", id)
	}
	for _, c := range cs {
		cid := fmt.Sprintf("%s container %v", id, c["name"])
		sc := mapping(c["securityContext"])
		if sc["allowPrivilegeEscalation"] != false {
			p.add("%s: securityContext.allowPrivilegeEscalation must be false", cid)
		}
		if sc["readOnlyRootFilesystem"] != true {
			p.add("%s: securityContext.readOnlyRootFilesystem must be true", cid)
		}
		drop := false
		for _, d := range list(dig(sc, "capabilities", "drop")) {
			if d == "ALL" {
				drop = true
			}
		}
		if !drop {
			p.add("%s: securityContext.capabilities.drop must include ALL", cid)
		}
		for _, r := range []string{"requests/cpu", "requests/memory", "limits/memory"} {
			a, b, _ := strings.Cut(r, "/")
			if dig(c, "resources", a, b) == nil {
				p.add("%s: resources.%s.%s is not set", cid, a, b)
			}
		}
		if o.str("kind") == "Deployment" {
			if dig(c, "readinessProbe", "httpGet", "path") != "/readyz" {
				p.add("%s: readinessProbe must GET /readyz", cid)
			}
			if dig(c, "livenessProbe", "httpGet", "path") != "/healthz" {
				p.add("%s: livenessProbe must GET /healthz (not /readyz: a Redis outage must not restart every pod)", cid)
			}
			if hasEnv(c, "TAPLINE_MIGRATE_DATABASE_URL") {
				p.add("%s: only the migration Job gets the owner URL TAPLINE_MIGRATE_DATABASE_URL", cid)
			}
		}
	}
	if comp == "worker" {
		grace, ok := spec["terminationGracePeriodSeconds"].(int)
		if !ok {
			p.add("%s: set terminationGracePeriodSeconds to TAPLINE_SHUTDOWN_TIMEOUT (%s) + margin", id, shutdown)
		} else if time.Duration(grace)*time.Second < shutdown+drainMargin {
			p.add("%s: terminationGracePeriodSeconds %d is shorter than TAPLINE_SHUTDOWN_TIMEOUT (%s) + %s: workers are killed mid-drain", id, grace, shutdown, drainMargin)
		}
	}
}

func checkNetworkPolicies(nps []object, components map[string]object, p *problems) {
	defaultDeny := false
	for _, np := range nps {
		sel := mapping(dig(np, "spec", "podSelector"))
		types := fmt.Sprint(dig(np, "spec", "policyTypes"))
		if len(sel) == 0 && strings.Contains(types, "Ingress") && strings.Contains(types, "Egress") &&
			len(list(dig(np, "spec", "ingress"))) == 0 && len(list(dig(np, "spec", "egress"))) == 0 {
			defaultDeny = true
		}
		// Any rule open to "everywhere" must carve out the cluster-internal ranges.
		for _, rule := range list(dig(np, "spec", "egress")) {
			for _, to := range list(mapping(rule)["to"]) {
				block := mapping(mapping(to)["ipBlock"])
				if block == nil {
					continue
				}
				cidr, _ := block["cidr"].(string)
				pfx, err := netip.ParsePrefix(cidr)
				if err != nil {
					p.add("%s: ipBlock cidr %q: %v", np.id(), cidr, err)
					continue
				}
				var excepts []netip.Prefix
				for _, e := range list(block["except"]) {
					ep, err := netip.ParsePrefix(fmt.Sprint(e))
					if err != nil {
						p.add("%s: ipBlock except %v: %v", np.id(), e, err)
						continue
					}
					excepts = append(excepts, ep)
				}
				must := privateV4
				if pfx.Addr().Is6() {
					must = privateV6
				}
				for _, m := range must {
					mp := netip.MustParsePrefix(m)
					if !pfx.Overlaps(mp) {
						continue
					}
					carved := false
					for _, e := range excepts {
						if e.Bits() <= mp.Bits() && e.Contains(mp.Addr()) {
							carved = true
						}
					}
					if !carved {
						p.add("%s: egress to %s does not except %s (cluster-internal; SSRF defence in depth)", np.id(), cidr, m)
					}
				}
			}
		}
	}
	if !defaultDeny {
		p.add("no default-deny NetworkPolicy (podSelector: {}, policyTypes Ingress and Egress, no rules)")
	}
	// The worker is the only component with internet egress.
	for comp, d := range components {
		labels := mapping(dig(d, "spec", "template", "metadata", "labels"))
		internet := false
		for _, np := range nps {
			if !selects(mapping(dig(np, "spec", "podSelector", "matchLabels")), labels) {
				continue
			}
			for _, rule := range list(dig(np, "spec", "egress")) {
				for _, to := range list(mapping(rule)["to"]) {
					if c, _ := dig(to, "ipBlock", "cidr").(string); c == "0.0.0.0/0" || c == "::/0" {
						internet = true
					}
				}
			}
		}
		if comp == "worker" && !internet {
			p.add("%s: no NetworkPolicy lets workers reach the internet", d.id())
		}
		if comp == "api" && internet {
			p.add("%s: the api must not have internet egress", d.id())
		}
	}
}
