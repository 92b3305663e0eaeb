// Command compose-config loads a compose file the way `docker compose config` does (the
// compose-spec loader: schema validation, interpolation, merging, consistency checks) and
// prints the resolved project, or the loader's error and exit status 1.
//
//	compose-config [-env-file FILE] docker-compose.yml
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	envFile := flag.String("env-file", "", "variables to interpolate (as docker compose --env-file)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: compose-config [-env-file FILE] docker-compose.yml")
		os.Exit(2)
	}
	fns := []cli.ProjectOptionsFn{cli.WithOsEnv, cli.WithConsistency(true)}
	if *envFile != "" {
		fns = append(fns, cli.WithEnvFiles(*envFile), cli.WithDotEnv)
	}
	options, err := cli.NewProjectOptions([]string{flag.Arg(0)}, fns...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := project.MarshalYAML()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
