package main

import "strings"

// configArg takes the config path out of args, the same way for every
// command that reads the config (tools, call, policy check, pins): from
// "--config FILE" or "--config=FILE", else from the first other argument
// when its name ends in .json or .jsonc (no group or subcommand is named
// so). Without either, the command falls back to $MOAT_CONFIG, then
// $DYNAMIC_MCP_CONFIG.
func configArg(args []string) (cfg []string, rest []string) {
	for i := 0; i < len(args); i++ {
		if args[i] == "--config" && i+1 < len(args) {
			cfg = []string{args[i+1]}
			i++
			continue
		}
		if v, ok := strings.CutPrefix(args[i], "--config="); ok {
			cfg = []string{v}
			continue
		}
		rest = append(rest, args[i])
	}
	if len(cfg) == 0 && len(rest) > 0 && looksLikeConfig(rest[0]) {
		cfg, rest = rest[:1], rest[1:]
	}
	return cfg, rest
}

// looksLikeConfig reports whether a command-line argument names a config
// file rather than a group: its name ends in .json or .jsonc.
func looksLikeConfig(arg string) bool {
	return strings.HasSuffix(arg, ".json") || strings.HasSuffix(arg, ".jsonc")
}
