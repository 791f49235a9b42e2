package kafka

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Broker is an embedded single-node Kafka-protocol broker (kfake) for development and tests. It
// listens on 127.0.0.1 only, and keeps its topics, records and group offsets under a data
// directory so that they survive a restart. It handles every request on one goroutine: it is
// not a production broker.
type Broker struct {
	cluster *kfake.Cluster
}

// StartBroker starts a broker whose state lives in dataDir/kafka, listening on addr's port on
// 127.0.0.1 (port 0 picks a free one). On first start it creates the default events,
// dead-letter and changes topics with partitions partitions (DefaultPartitions when 0), which is
// also the partition count of topics created without one. It fails when addr names another
// host, the port is taken, or the persisted state cannot be read.
func StartBroker(dataDir, addr string, partitions int) (*Broker, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("start broker: address %q: %w", addr, err)
	}
	if host != "" && host != "127.0.0.1" && host != "localhost" {
		return nil, fmt.Errorf("start broker: address %q: the embedded broker listens on 127.0.0.1 only", addr)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("start broker: port %q: %w", portText, err)
	}
	if partitions <= 0 {
		partitions = DefaultPartitions
	}
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.DataDir(filepath.Join(dataDir, "kafka")),
		kfake.DefaultNumPartitions(partitions),
		kfake.SeedTopics(int32(partitions), DefaultEventsTopic, DeadLetterTopic(DefaultEventsTopic), DefaultChangesTopic),
	)
	if err != nil {
		return nil, fmt.Errorf("start broker in %s: %w", dataDir, err)
	}
	return &Broker{cluster: cluster}, nil
}

// Addrs returns the host:port addresses clients connect to.
func (b *Broker) Addrs() []string { return b.cluster.ListenAddrs() }

// Close stops the broker, flushing its state to disk. It returns nil.
func (b *Broker) Close() error {
	b.cluster.Close()
	return nil
}
