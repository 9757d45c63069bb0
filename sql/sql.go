// Package sql embeds triggerd's schema migrations. Files are named
// NNN_description.sql and applied in order, each at most once, by package store.
package sql

import "embed"

// Migrations holds the migration files at its root.
//
//go:embed *.sql
var Migrations embed.FS
