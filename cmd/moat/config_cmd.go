package main

import (
	"context"
	"fmt"
	"os"
	"sort"

	"github.com/moatmcp/moat/internal/config"
)

func runConfig(_ context.Context, args []string) int {
	if len(args) == 0 {
		return usageError("config needs a subcommand: validate [FILE] or schema")
	}
	switch args[0] {
	case "schema":
		os.Stdout.Write(config.Schema())
		return exitOK
	case "validate":
		file, rest := configArg(args[1:])
		file = append(file, rest...)
		if len(file) > 1 {
			return usageError("config validate takes one file")
		}
		arg := ""
		if len(file) == 1 {
			arg = file[0]
		}
		path, _, err := config.ResolvePath(arg, os.LookupEnv)
		if err != nil {
			printError(os.Stderr, err)
			return exitUsage
		}
		cfg, err := loadForCommand(path)
		if err != nil {
			printError(os.Stderr, err)
			return exitUsage
		}
		enabled := 0
		for _, s := range cfg.Servers {
			if s.Enabled {
				enabled++
			}
		}
		fmt.Printf("config OK: %s: %d servers (%d enabled)\n", path, len(cfg.Servers), enabled)
		return exitOK
	}
	return usageError("unknown config subcommand %q: use validate or schema", args[0])
}

func sortedServerNames(cfg *config.Config) []string {
	names := make([]string, 0, len(cfg.Servers))
	for n := range cfg.Servers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
