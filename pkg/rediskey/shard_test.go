package rediskey

import "testing"

func TestSlot(t *testing.T) {
	// Values from CLUSTER KEYSLOT.
	for key, want := range map[string]uint16{"foo": 12182, "123456789": 12739, "{user1000}.following": 3443, "{}x": Slot("{}x")} {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
	if Slot("{foo}bar") != Slot("foo") {
		t.Error("hash tag not used")
	}
}

func TestShards(t *testing.T) {
	one := New("ws:").Shards(1)
	if len(one) != 1 || one[0].Presence() != "ws:presence" || one[0].Users() != "ws:users" ||
		one[0].Heartbeat("g") != New("ws:").Heartbeat("g") || one[0].Conns("g") != New("ws:").GatewayConns("g") {
		t.Fatalf("one shard: %+v", one)
	}
	plain := New("ws:").Shards(3)
	if plain[2].Presence() != "ws:presence:2" || plain[2].Users() != "ws:users:2" || plain[2].Conns("g") != "ws:presence:2:gateway:g:conns" {
		t.Fatalf("plain shards: %s %s %s", plain[2].Presence(), plain[2].Users(), plain[2].Conns("g"))
	}
	tagged := New("{ws}:").Shards(3)
	for i, s := range tagged {
		slot := int(Slot(s.Presence()))
		if slot < i*16384/3 || slot >= (i+1)*16384/3 {
			t.Errorf("shard %d (%s) in slot %d", i, s.Presence(), slot)
		}
		for _, k := range []string{s.Users(), s.Heartbeat("g"), s.Conns("g"), s.Swept("g")} {
			if Slot(k) != Slot(s.Presence()) {
				t.Errorf("%s not in the slot of %s", k, s.Presence())
			}
		}
		t.Logf("shard %d: %s slot %d", i, s.Presence(), slot)
	}
}
