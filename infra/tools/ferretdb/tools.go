//go:build tools

// Package tools pins the FerretDB version the local stack builds (see infra/install.sh).
package tools

import _ "github.com/FerretDB/FerretDB/cmd/ferretdb"
