package broker

import (
	"testing"

	"github.com/wsgw/wsgw/pkg/integration"
)

func TestMain(m *testing.M) { integration.MainWithLeakCheck(m) }
