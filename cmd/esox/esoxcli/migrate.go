package esoxcli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/esox-go/esox"
	"github.com/esox-go/esox/eventstore/postgres"
)

// migrationJSON is a migration as --json prints it.
type migrationJSON struct {
	Component string     `json:"component"`
	Version   int        `json:"version"`
	Name      string     `json:"name"`
	AppliedAt *time.Time `json:"applied_at,omitempty"`
	Known     *bool      `json:"known,omitempty"`
	SQL       string     `json:"sql,omitempty"`
}

func appliedJSON(ms []postgres.AppliedMigration) []migrationJSON {
	out := make([]migrationJSON, 0, len(ms))
	for _, m := range ms {
		at, known := m.AppliedAt.UTC(), m.Known
		out = append(out, migrationJSON{Component: m.Component, Version: m.Version, Name: m.Name, AppliedAt: &at, Known: &known})
	}
	return out
}

func pendingJSON(ms []postgres.PendingMigration, withSQL bool) []migrationJSON {
	out := make([]migrationJSON, 0, len(ms))
	for _, m := range ms {
		j := migrationJSON{Component: m.Component, Version: m.Version, Name: m.Name}
		if withSQL {
			j.SQL = m.SQL
		}
		out = append(out, j)
	}
	return out
}

func (e *env) migrateCommand() *cobra.Command {
	var components []string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Plan, check and apply the schema's migrations",
		Long: `Plan, check and apply the migrations of esox's components in the schema:
the event store (events, snapshots), the projector (checkpoints, dead
letters, inbox) and the forwarder (offsets). --component limits them.

Projections are not migrations: a projection version is registered, and its
Setup creates its tables, when the application migrates (esox.App.Migrate,
or projector.Runner.Migrate with its projections). Run the application's
migration step after 'esox migrate apply' when projections changed; the
application's own components' migrations are its job too.

plan and status only read (a role without DDL rights may run them); apply
needs the schema's owner. Several processes may apply at once: one applies,
the others find nothing to do.`,
	}
	cmd.PersistentFlags().StringSliceVar(&components, "component", nil, "only these components: eventstore, projector, forwarder (default all)")
	_ = cmd.RegisterFlagCompletionFunc("component", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return knownComponents(), cobra.ShellCompDirectiveNoFileComp
	})
	sets := func() ([]postgres.MigrationParams, error) { return e.migrationSets(components) }

	plan := &cobra.Command{
		Use:   "plan",
		Short: "List the migrations an apply would run (reads only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := e.migrationStatus(cmd.Context(), sets)
			if err != nil {
				return err
			}
			if e.json {
				return e.writeJSON(struct {
					Schema  string          `json:"schema"`
					Pending []migrationJSON `json:"pending"`
				}{st.Schema, pendingJSON(st.Pending, false)})
			}
			if st.UpToDate() {
				_, err := fmt.Fprintf(e.io.Stdout, "schema %s is up to date: nothing to apply\n", st.Schema)
				return err
			}
			fmt.Fprintf(e.io.Stdout, "schema %s: %d pending migration(s)\n", st.Schema, len(st.Pending))
			t := newTable(e.io.Stdout, "COMPONENT", "VERSION", "NAME")
			for _, m := range st.Pending {
				t.row(m.Component, fmt.Sprintf("%03d", m.Version), m.Name)
			}
			return t.flush()
		},
	}

	status := &cobra.Command{
		Use:   "status",
		Short: "List applied migrations, with times, and pending ones (reads only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := e.migrationStatus(cmd.Context(), sets)
			if err != nil {
				return err
			}
			if e.json {
				return e.writeJSON(struct {
					Schema       string          `json:"schema"`
					SchemaExists bool            `json:"schema_exists"`
					UpToDate     bool            `json:"up_to_date"`
					Applied      []migrationJSON `json:"applied"`
					Pending      []migrationJSON `json:"pending"`
				}{st.Schema, st.SchemaExists, st.UpToDate(), appliedJSON(st.Applied), pendingJSON(st.Pending, false)})
			}
			switch {
			case !st.SchemaExists:
				fmt.Fprintf(e.io.Stdout, "schema %s does not exist: everything is pending\n", st.Schema)
			case st.UpToDate():
				fmt.Fprintf(e.io.Stdout, "schema %s is up to date\n", st.Schema)
			default:
				fmt.Fprintf(e.io.Stdout, "schema %s: %d pending migration(s)\n", st.Schema, len(st.Pending))
			}
			t := newTable(e.io.Stdout, "COMPONENT", "VERSION", "NAME", "STATUS", "APPLIED AT")
			for _, m := range st.Applied {
				state := "applied"
				if !m.Known {
					state = "applied (not one of esox's)"
				}
				t.row(m.Component, fmt.Sprintf("%03d", m.Version), m.Name, state, formatTime(m.AppliedAt))
			}
			for _, m := range st.Pending {
				t.row(m.Component, fmt.Sprintf("%03d", m.Version), m.Name, "pending", "-")
			}
			return t.flush()
		},
	}

	var dryRun bool
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Apply pending migrations (--dry-run prints their SQL instead)",
		Long: `Apply the pending migrations, one transaction per component under the
schema's migration lock, and list what was applied. With --dry-run, print
the SQL an apply would run, in order, as a psql script, and change nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dryRun {
				st, err := e.migrationStatus(cmd.Context(), sets)
				if err != nil {
					return err
				}
				if e.json {
					return e.writeJSON(struct {
						Schema  string          `json:"schema"`
						DryRun  bool            `json:"dry_run"`
						Pending []migrationJSON `json:"pending"`
						Script  string          `json:"script"`
					}{st.Schema, true, pendingJSON(st.Pending, true), st.Script()})
				}
				if st.UpToDate() {
					_, err := fmt.Fprintf(e.io.Stdout, "-- schema %s is up to date: nothing to apply\n", st.Schema)
					return err
				}
				_, err = fmt.Fprint(e.io.Stdout, st.Script())
				return err
			}
			store, err := e.open(cmd.Context())
			if err != nil {
				return err
			}
			ss, err := sets()
			if err != nil {
				return err
			}
			res, err := postgres.ApplyMigrationSets(cmd.Context(), store.DB(), store.Schema(), ss...)
			if err != nil {
				if len(res.Applied) > 0 {
					fmt.Fprintf(e.io.Stderr, "applied before the failure: %s\n", migrationNames(res.Applied))
				}
				return err
			}
			if e.json {
				out := make([]migrationJSON, 0, len(res.Applied))
				for _, m := range res.Applied {
					out = append(out, migrationJSON{Component: m.Component, Version: m.Version, Name: m.Name})
				}
				return e.writeJSON(struct {
					Schema  string          `json:"schema"`
					Applied []migrationJSON `json:"applied"`
				}{store.Schema(), out})
			}
			if len(res.Applied) == 0 {
				_, err := fmt.Fprintf(e.io.Stdout, "schema %s is up to date: nothing applied\n", store.Schema())
				return err
			}
			for _, m := range res.Applied {
				fmt.Fprintf(e.io.Stdout, "applied %s %03d_%s\n", m.Component, m.Version, m.Name)
			}
			_, err = fmt.Fprintf(e.io.Stdout, "schema %s: %d migration(s) applied\n", store.Schema(), len(res.Applied))
			return err
		},
	}
	apply.Flags().BoolVar(&dryRun, "dry-run", false, "print the SQL that would run, apply nothing")

	cmd.AddCommand(plan, status, apply)
	return cmd
}

func migrationNames(ms []postgres.Migration) string {
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = fmt.Sprintf("%s %03d_%s", m.Component, m.Version, m.Name)
	}
	return strings.Join(names, ", ")
}

// knownComponents names esox's components, in apply order.
func knownComponents() []string {
	sets, _ := esox.Migrations(postgres.SchemaDefault)
	names := make([]string, len(sets))
	for i, s := range sets {
		names[i] = s.Component
	}
	return names
}

// migrationSets returns esox's migration sets in the schema, only the
// components named when any are.
func (e *env) migrationSets(components []string) ([]postgres.MigrationParams, error) {
	sets, err := esox.Migrations(e.schema())
	if err != nil {
		return nil, usagef("--schema: %w", err)
	}
	if len(components) == 0 {
		return sets, nil
	}
	known := knownComponents()
	for _, c := range components {
		if !slices.Contains(known, c) {
			return nil, usagef("--component: unknown component %q (known: %s)", c, strings.Join(known, ", "))
		}
	}
	return slices.DeleteFunc(sets, func(s postgres.MigrationParams) bool { return !slices.Contains(components, s.Component) }), nil
}

func (e *env) migrationStatus(ctx context.Context, sets func() ([]postgres.MigrationParams, error)) (postgres.MigrationStatus, error) {
	ss, err := sets()
	if err != nil {
		return postgres.MigrationStatus{}, err
	}
	store, err := e.open(ctx)
	if err != nil {
		return postgres.MigrationStatus{}, err
	}
	return postgres.ReadMigrationStatus(ctx, store.DB(), store.Schema(), ss...)
}
