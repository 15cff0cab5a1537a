package auth

import (
	"testing"

	"github.com/wsgw/wsgw/internal/testkit"
)

func TestMain(m *testing.M) { testkit.MainWithLeakCheck(m) }
