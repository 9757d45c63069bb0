package cdc

import (
	"testing"

	"github.com/triggerd/triggerd/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
