package agent

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Calls for one container never overlap; calls for others do not wait for them.
func TestSameContainerSerialized(t *testing.T) {
	var k keyedMutex
	var inside, maxInside int32
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := k.lock(context.Background(), "ctr-a"); err != nil {
				t.Error(err)
				return
			}
			n := atomic.AddInt32(&inside, 1)
			for {
				m := atomic.LoadInt32(&maxInside)
				if n <= m || atomic.CompareAndSwapInt32(&maxInside, m, n) {
					break
				}
			}
			time.Sleep(5 * time.Millisecond)
			atomic.AddInt32(&inside, -1)
			k.unlock("ctr-a")
		}()
	}
	// Meanwhile another container goes through at once.
	if err := k.lock(context.Background(), "ctr-a"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := k.lock(ctx, "ctr-b"); err != nil {
		t.Fatalf("ctr-b waited for ctr-a: %v", err)
	}
	k.unlock("ctr-b")
	k.unlock("ctr-a")
	wg.Wait()
	if maxInside != 1 {
		t.Fatalf("%d calls for one container ran at once", maxInside)
	}
	if len(k.m) != 0 {
		t.Fatalf("locks left behind: %v", k.m)
	}
}

// A call waiting for its container gives up with its context and leaves no lock behind.
func TestContainerWaitCancelled(t *testing.T) {
	var k keyedMutex
	if err := k.lock(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := k.lock(ctx, "c"); err == nil {
		t.Fatal("second lock of a held container passed")
	}
	k.unlock("c")
	if len(k.m) != 0 {
		t.Fatalf("locks left behind: %v", k.m)
	}
}
