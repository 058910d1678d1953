package dns

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/coredns/caddy/caddyfile"
	corev1 "k8s.io/api/core/v1"
)

// source is where a piece of CoreDNS configuration comes from: one key of
// one ConfigMap in kube-system.
type source struct {
	configMap string
	key       string
}

// String renders "ConfigMap kube-system/coredns key Corefile".
func (s source) String() string {
	return fmt.Sprintf("ConfigMap kube-system/%s key %s", s.configMap, s.key)
}

// at renders a location, "coredns/Corefile:12".
func (s source) at(line int) string {
	if line <= 0 {
		return s.configMap + "/" + s.key
	}
	return fmt.Sprintf("%s/%s:%d", s.configMap, s.key, line)
}

// directive is one plugin line of a server block, with its argument lines
// inside { } if it has a block.
type directive struct {
	name string
	args []string
	opts [][]string
	src  source
	line int
}

// opt returns the arguments of the first option line named name.
func (d directive) opt(name string) ([]string, bool) {
	for _, o := range d.opts {
		if len(o) > 0 && o[0] == name {
			return o[1:], true
		}
	}
	return nil, false
}

// serverBlock is one CoreDNS server: its keys ("example.com:53") and its
// plugins, including those injected by imports.
type serverBlock struct {
	keys       []string
	src        source
	line       int
	directives []directive
}

// where renders the block's keys and location for evidence.
func (b *serverBlock) where() string {
	return fmt.Sprintf("%s (%s)", strings.Join(b.keys, " "), b.src.at(b.line))
}

// problem is something wrong in the configuration, with its location.
type problem struct {
	src  source
	line int
	msg  string
	// text is the offending line as written, when known.
	text string
}

// importRef is an import directive and what it resolved to.
type importRef struct {
	pattern string
	src     source
	line    int
	// configMap and keys are what the pattern reads; configMap is "" when
	// kdiag cannot tell which ConfigMap is mounted there.
	configMap string
	keys      []string
}

// config is the whole CoreDNS configuration: the Corefile and everything it
// imports from ConfigMaps, as parsed by the CoreDNS parser.
type config struct {
	// server names the DNS server in titles: CoreDNS or kube-dns.
	server  string
	main    source
	blocks  []*serverBlock
	imports []importRef
	// invalid lists problems that make CoreDNS refuse the configuration
	// or load something else than what was written.
	invalid []problem
	// parsed is false when the Corefile itself did not parse: then nothing
	// is known about its blocks and imports.
	parsed bool
}

// Placeholders. The CoreDNS parser substitutes {$VAR} from the environment
// and reads imported files from disk; kdiag must do neither (an analyzer is
// a pure function of the snapshot). So before parsing, environment
// references are escaped and import directives renamed; imports are then
// resolved against the ConfigMaps in the snapshot.
const (
	importPlaceholder = "__kdiag_import__"
	envPlaceholder    = "{kdiag-env:"
	winEnvPlaceholder = "{kdiag-winenv:"
)

var importRE = regexp.MustCompile(`(?m)(^|[ \t])import([ \t]+)(\S+)`)

// unescape turns placeholders back into what the user wrote.
func unescape(s string) string {
	s = strings.ReplaceAll(s, envPlaceholder, "{$")
	s = strings.ReplaceAll(s, winEnvPlaceholder, "{%")
	return strings.ReplaceAll(s, importPlaceholder, "import")
}

// prepare escapes environment references and renames every import that
// does not name a snippet of the same text.
func prepare(text string) string {
	text = strings.ReplaceAll(text, "{$", envPlaceholder)
	text = strings.ReplaceAll(text, "{%", winEnvPlaceholder)
	snippets := map[string]bool{}
	for _, t := range tokens("snippets", text) {
		if strings.HasPrefix(t.Text, "(") && strings.HasSuffix(t.Text, ")") {
			snippets[strings.TrimSuffix(t.Text[1:], ")")] = true
		}
	}
	return importRE.ReplaceAllStringFunc(text, func(m string) string {
		sub := importRE.FindStringSubmatch(m)
		if snippets[sub[3]] {
			return m
		}
		return sub[1] + importPlaceholder + sub[2] + sub[3]
	})
}

// tokens lexes text with the CoreDNS lexer.
func tokens(file, text string) []caddyfile.Token {
	d := caddyfile.NewDispenser(file, strings.NewReader(text))
	var out []caddyfile.Token
	for d.Next() {
		out = append(out, caddyfile.Token{File: file, Line: d.Line(), Text: d.Val()})
	}
	return out
}

// topLevelImports finds the imports that stand between server blocks (the
// parser treats an import at the start of a line there) and comments their
// lines out, so that the parser sees only server blocks. Line numbers stay.
func topLevelImports(file, text string) (string, []importRef) {
	toks := tokens(file, text)
	depth := 0
	var refs []importRef
	lines := strings.Split(text, "\n")
	for i, t := range toks {
		switch t.Text {
		case "{":
			depth++
			continue
		case "}":
			depth--
			continue
		}
		newLine := i == 0 || toks[i-1].Line < t.Line
		if depth != 0 || !newLine || t.Text != importPlaceholder {
			continue
		}
		pattern := ""
		if i+1 < len(toks) && toks[i+1].Line == t.Line {
			pattern = toks[i+1].Text
		}
		refs = append(refs, importRef{pattern: unescape(pattern), line: t.Line})
		if t.Line-1 < len(lines) {
			lines[t.Line-1] = "#" + lines[t.Line-1]
		}
	}
	return strings.Join(lines, "\n"), refs
}

// parseErrLine pulls the line number out of a caddyfile error, which reads
// "FILE:LINE - Error during parsing: ..." or "FILE:LINE - Syntax error: ...".
func parseErrLine(file string, err error) (int, string) {
	msg := err.Error()
	rest, ok := strings.CutPrefix(msg, file+":")
	if !ok {
		return 0, unescape(msg)
	}
	num, tail, ok := strings.Cut(rest, " - ")
	if !ok {
		return 0, unescape(msg)
	}
	n, convErr := strconv.Atoi(num)
	if convErr != nil {
		return 0, unescape(msg)
	}
	return n, unescape(tail)
}

// lineOf returns line n (1-based) of text, trimmed.
func lineOf(text string, n int) string {
	lines := strings.Split(text, "\n")
	if n < 1 || n > len(lines) {
		return ""
	}
	return strings.TrimSpace(lines[n-1])
}

// parseServers parses a Corefile or a *.server file into server blocks.
// Imports inside blocks stay as directives named "import"; the imports
// between blocks are returned separately.
func parseServers(src source, text string) ([]*serverBlock, []importRef, *problem) {
	file := src.at(0)
	prepared := prepare(text)
	prepared, top := topLevelImports(file, prepared)
	for i := range top {
		top[i].src = src
	}
	sbs, err := caddyfile.Parse(file, strings.NewReader(prepared), nil)
	if err != nil {
		line, msg := parseErrLine(file, err)
		return nil, top, &problem{src: src, line: line, msg: msg, text: lineOf(text, line)}
	}
	// Find each block's first line: the next top-level occurrence of its
	// first key, in token order.
	toks := tokens(file, prepared)
	cursor, depth := 0, 0
	blockLine := func(key string) int {
		for ; cursor < len(toks); cursor++ {
			t := toks[cursor]
			if depth == 0 && t.Text == key {
				cursor++
				return t.Line
			}
			switch t.Text {
			case "{":
				depth++
			case "}":
				depth--
			}
		}
		return 0
	}
	var out []*serverBlock
	for _, sb := range sbs {
		b := &serverBlock{src: src}
		for _, k := range sb.Keys {
			b.keys = append(b.keys, unescape(k))
		}
		if len(sb.Keys) > 0 {
			b.line = blockLine(sb.Keys[0])
		}
		b.directives = directivesOf(src, file, sb)
		out = append(out, b)
	}
	return out, top, nil
}

// parseOverride parses a *.override file: plugin lines that the Corefile
// imports into a server block. They are wrapped in a block on the same
// first line, so that line numbers stay those of the key.
func parseOverride(src source, text string) ([]directive, *problem) {
	file := src.at(0)
	wrapped := "__kdiag_override__ { " + prepare(text) + "\n}"
	sbs, err := caddyfile.Parse(file, strings.NewReader(wrapped), nil)
	if err != nil {
		line, msg := parseErrLine(file, err)
		return nil, &problem{src: src, line: line, msg: msg, text: lineOf(text, line)}
	}
	if len(sbs) != 1 {
		// An extra "}" closed the server block the file is imported into.
		return nil, &problem{src: src, msg: "unbalanced braces: a '}' closes the server block this file is imported into"}
	}
	return directivesOf(src, file, sbs[0]), nil
}

// directivesOf splits a parsed block's tokens into directives in file
// order, reading each the way CoreDNS plugins read theirs (Next,
// RemainingArgs, NextBlock).
func directivesOf(src source, file string, sb caddyfile.ServerBlock) []directive {
	var out []directive
	for name, toks := range sb.Tokens {
		d := caddyfile.NewDispenserTokens(file, toks)
		for d.Next() {
			if d.Val() != name {
				continue // the rest of a nested block NextBlock does not follow
			}
			dir := directive{name: unescape(name), src: src, line: d.Line()}
			for _, a := range d.RemainingArgs() {
				dir.args = append(dir.args, unescape(a))
			}
			for d.NextBlock() {
				opt := []string{unescape(d.Val())}
				for _, a := range d.RemainingArgs() {
					opt = append(opt, unescape(a))
				}
				dir.opts = append(dir.opts, opt)
			}
			out = append(out, dir)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].line != out[j].line {
			return out[i].line < out[j].line
		}
		return out[i].name < out[j].name
	})
	return out
}

// mounts maps paths inside the CoreDNS container to ConfigMaps, from the
// DNS Deployment's pod template.
type mounts struct {
	// confFile is the Corefile path given with -conf.
	confFile string
	vols     []mountedConfigMap
}

type mountedConfigMap struct {
	path      string
	subPath   string
	configMap string
	// items maps file name -> key when the volume lists items.
	items map[string]string
}

// defaultConfFile is where CoreDNS Deployments (kubeadm, AKS, EKS, k3s)
// keep the Corefile.
const defaultConfFile = "/etc/coredns/Corefile"

// mountsOf reads the pod template of the DNS Deployment. The CoreDNS
// container is the one started with -conf, else the one named coredns,
// else the first.
func mountsOf(spec *corev1.PodSpec) mounts {
	m := mounts{confFile: defaultConfFile}
	if spec == nil || len(spec.Containers) == 0 {
		return m
	}
	c := &spec.Containers[0]
	for i := range spec.Containers {
		if spec.Containers[i].Name == "coredns" {
			c = &spec.Containers[i]
		}
	}
	for i := range spec.Containers {
		if _, ok := confArg(spec.Containers[i].Args); ok {
			c = &spec.Containers[i]
			break
		}
	}
	if f, ok := confArg(c.Args); ok {
		m.confFile = path.Clean(f)
	}
	vols := map[string]*corev1.ConfigMapVolumeSource{}
	for i := range spec.Volumes {
		if spec.Volumes[i].ConfigMap != nil {
			vols[spec.Volumes[i].Name] = spec.Volumes[i].ConfigMap
		}
	}
	for _, vm := range c.VolumeMounts {
		cm := vols[vm.Name]
		if cm == nil {
			continue
		}
		mc := mountedConfigMap{path: path.Clean(vm.MountPath), subPath: vm.SubPath, configMap: cm.Name}
		if len(cm.Items) > 0 {
			mc.items = map[string]string{}
			for _, it := range cm.Items {
				mc.items[it.Path] = it.Key
			}
		}
		m.vols = append(m.vols, mc)
	}
	return m
}

func confArg(args []string) (string, bool) {
	for i, a := range args {
		switch {
		case (a == "-conf" || a == "--conf") && i+1 < len(args):
			return args[i+1], true
		case strings.HasPrefix(a, "-conf="):
			return strings.TrimPrefix(a, "-conf="), true
		case strings.HasPrefix(a, "--conf="):
			return strings.TrimPrefix(a, "--conf="), true
		}
	}
	return "", false
}

// fileSource finds the ConfigMap key mounted at file.
func (m mounts) fileSource(file string) (source, bool) {
	file = path.Clean(file)
	for _, v := range m.vols {
		if v.subPath != "" {
			if v.path == file {
				return source{configMap: v.configMap, key: v.keyFor(v.subPath)}, true
			}
			continue
		}
		if v.path == path.Dir(file) {
			return source{configMap: v.configMap, key: v.keyFor(path.Base(file))}, true
		}
	}
	return source{}, false
}

func (v mountedConfigMap) keyFor(file string) string {
	if v.items != nil {
		if k, ok := v.items[file]; ok {
			return k
		}
	}
	return file
}

// resolve maps an import pattern to a ConfigMap and the keys it matches,
// the way the parser globs files relative to the Corefile's directory.
// Without a mount at that directory, a directory named "custom" means
// coredns-custom, the AKS and k3s convention. keys of a missing ConfigMap
// match nothing, as an optional volume does.
func (m mounts) resolve(pattern string, cms func(string) *corev1.ConfigMap) (string, []string) {
	abs := pattern
	if !path.IsAbs(abs) {
		abs = path.Join(path.Dir(m.confFile), pattern)
	}
	dir, glob := path.Split(abs)
	dir = path.Clean(dir)
	name := ""
	var items map[string]string
	for _, v := range m.vols {
		if v.subPath == "" && v.path == dir {
			name, items = v.configMap, v.items
		}
	}
	if name == "" && path.Base(dir) == "custom" {
		name = "coredns-custom"
	}
	if name == "" {
		return "", nil
	}
	cm := cms(name)
	if cm == nil {
		return name, nil
	}
	var keys []string
	if items != nil {
		for file, key := range items {
			if ok, _ := path.Match(glob, file); ok {
				if _, present := cm.Data[key]; present {
					keys = append(keys, key)
				}
			}
		}
	} else {
		for key := range cm.Data {
			if ok, _ := path.Match(glob, key); ok {
				keys = append(keys, key)
			}
		}
	}
	sort.Strings(keys)
	return name, keys
}

// hasGlob reports whether an import pattern is a glob; a plain file that is
// missing is a parse error in CoreDNS, a glob that matches nothing is not.
func hasGlob(p string) bool { return strings.ContainsAny(p, "*?[") }

// loadConfig parses the Corefile in main and every ConfigMap key it
// imports (one level deep, which covers AKS's coredns-custom layout).
func loadConfig(main source, text string, m mounts, cms func(string) *corev1.ConfigMap) *config {
	cfg := &config{server: "CoreDNS", main: main}
	blocks, top, perr := parseServers(main, text)
	if perr != nil {
		cfg.invalid = append(cfg.invalid, *perr)
		return cfg
	}
	cfg.parsed = true
	readKey := func(ref *importRef) {
		ref.configMap, ref.keys = m.resolve(ref.pattern, cms)
		cm := (*corev1.ConfigMap)(nil)
		if ref.configMap != "" {
			cm = cms(ref.configMap)
		}
		// A plain file that is missing stops CoreDNS; a glob that matches
		// nothing does not. kdiag only knows files that come from a
		// ConfigMap; any other path may exist in the image.
		if len(ref.keys) == 0 && !hasGlob(ref.pattern) && ref.configMap != "" {
			what := "no such key in ConfigMap kube-system/" + ref.configMap
			if cm == nil {
				what = "ConfigMap kube-system/" + ref.configMap + " does not exist"
			}
			cfg.invalid = append(cfg.invalid, problem{src: ref.src, line: ref.line,
				msg: fmt.Sprintf("File to import not found: %s (%s)", ref.pattern, what)})
		}
	}
	for _, b := range dropStrayBlocks(cfg, blocks) {
		var expanded []directive
		for _, d := range b.directives {
			if d.name != "import" {
				expanded = append(expanded, d)
				continue
			}
			ref := importRef{src: d.src, line: d.line}
			if len(d.args) > 0 {
				ref.pattern = d.args[0]
			}
			readKey(&ref)
			cfg.imports = append(cfg.imports, ref)
			cm := cms(ref.configMap)
			for _, k := range ref.keys {
				src := source{configMap: ref.configMap, key: k}
				ds, perr := parseOverride(src, cm.Data[k])
				if perr != nil {
					cfg.invalid = append(cfg.invalid, *perr)
					continue
				}
				expanded = append(expanded, ds...)
			}
		}
		b.directives = expanded
		cfg.blocks = append(cfg.blocks, b)
	}
	for _, ref := range top {
		readKey(&ref)
		cfg.imports = append(cfg.imports, ref)
		cm := cms(ref.configMap)
		for _, k := range ref.keys {
			src := source{configMap: ref.configMap, key: k}
			bs, _, perr := parseServers(src, cm.Data[k])
			if perr != nil {
				cfg.invalid = append(cfg.invalid, *perr)
				continue
			}
			cfg.blocks = append(cfg.blocks, dropStrayBlocks(cfg, bs)...)
		}
	}
	cfg.invalid = append(cfg.invalid, duplicateServers(cfg.blocks)...)
	return cfg
}

// dropStrayBlocks removes the "server blocks" that an unbalanced brace
// makes the parser see, and records each as a problem. The CoreDNS parser
// accepts a stray "}" as a server key, and the lines after a "}" that
// closes a block too early as keys of a new block: CoreDNS then loads
// something other than what was written.
func dropStrayBlocks(cfg *config, blocks []*serverBlock) []*serverBlock {
	known := stockPlugins()
	var out []*serverBlock
	for _, b := range blocks {
		first := ""
		if len(b.keys) > 0 {
			first = b.keys[0]
		}
		switch {
		case first == "}" || first == "{":
			cfg.invalid = append(cfg.invalid, problem{src: b.src, line: b.line,
				msg: fmt.Sprintf("unbalanced braces: a stray %q where a server block should start", first)})
		case len(b.directives) == 0 && known[first]:
			cfg.invalid = append(cfg.invalid, problem{src: b.src, line: b.line,
				msg: fmt.Sprintf("plugin line %q stands outside any server block: a '}' before it closes the block too early, so CoreDNS drops the plugin", strings.Join(b.keys, " "))})
		default:
			out = append(out, b)
		}
	}
	return out
}

// serverAddr is a normalized server block key: transport, zone and port.
type serverAddr struct {
	transport, zone, port string
}

// defaultPort returns the default port of a CoreDNS transport, and
// whether CoreDNS knows the transport.
func defaultPort(transport string) (string, bool) {
	switch transport {
	case "dns":
		return "53", true
	case "tls", "quic":
		return "853", true
	case "grpc", "https", "https3":
		return "443", true
	case "unix":
		return "", true
	}
	return "", false
}

// splitTransport strips a scheme://, returning "dns" when there is none.
func splitTransport(s string) (string, string) {
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		if _, known := defaultPort(strings.ToLower(scheme)); known {
			return strings.ToLower(scheme), rest
		}
	}
	return "dns", s
}

// parseServerKey normalizes a server block key like "dns://example.com:53".
func parseServerKey(k string) serverAddr {
	tr, rest := splitTransport(k)
	zone := rest
	port, _ := defaultPort(tr)
	if i := strings.LastIndex(rest, ":"); i >= 0 && !strings.Contains(rest[i:], "]") {
		zone, port = rest[:i], rest[i+1:]
	}
	return serverAddr{transport: tr, zone: fqdn(zone), port: port}
}

// fqdn lowercases a zone and adds the trailing dot.
func fqdn(z string) string {
	z = strings.ToLower(z)
	if z == "" {
		return "."
	}
	if !strings.HasSuffix(z, ".") && !strings.Contains(z, "/") {
		z += "."
	}
	return z
}

// duplicateServers finds two server blocks for the same zone and port,
// which CoreDNS refuses to start with ("cannot serve ... - it is already
// defined"). It is a common result of a *.server file that repeats a zone
// of the Corefile.
func duplicateServers(blocks []*serverBlock) []problem {
	seen := map[serverAddr]*serverBlock{}
	var out []problem
	for _, b := range blocks {
		for _, k := range b.keys {
			a := parseServerKey(k)
			if prev, ok := seen[a]; ok && prev != b {
				out = append(out, problem{src: b.src, line: b.line,
					msg: fmt.Sprintf("cannot serve %s%s:%s - it is already defined at %s", schemePrefix(a.transport), a.zone, a.port, prev.src.at(prev.line))})
				continue
			}
			seen[a] = b
		}
	}
	return out
}

func schemePrefix(tr string) string {
	if tr == "dns" {
		return ""
	}
	return tr + "://"
}
