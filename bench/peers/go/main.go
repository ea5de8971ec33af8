// The HTTP -> Kafka edge a Go shop would write, as the peer of uplink's ingress in
// bench/ingress_load.py: net/http and franz-go. POST /v1/uplink produces the body as it came
// (JSON, no validation, no Avro) to the topic with acks=all and idempotence, linger 0, keyed like
// uplink (businessPhone:from.phone), and answers 200 {"messageId": ...} once the broker has
// acknowledged it; 503 when it has not. GET /readyz answers 200.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

type push struct {
	MessageID     string `json:"messageId"`
	BusinessPhone string `json:"businessPhone"`
	From          struct {
		Phone string `json:"phone"`
	} `json:"from"`
}

func main() {
	addr := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	bootstrap := flag.String("bootstrap", "127.0.0.1:9092", "Kafka bootstrap servers, comma-separated")
	topic := flag.String("topic", "uplink.messages.v1", "topic to produce to")
	flag.Parse()

	client, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(*bootstrap, ",")...),
		kgo.DefaultProduceTopic(*topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		// Keyed records by murmur2 of the key, as the Java client (and uplink) partitions them.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ready"))
	})
	mux.HandleFunc("POST /v1/uplink", func(w http.ResponseWriter, r *http.Request) {
		body, err := readAll(r)
		if err != nil {
			http.Error(w, `{"error":"bad body"}`, http.StatusBadRequest)
			return
		}
		var p push
		if err := json.Unmarshal(body, &p); err != nil {
			http.Error(w, `{"error":"not json"}`, http.StatusBadRequest)
			return
		}
		record := &kgo.Record{Key: []byte(p.BusinessPhone + ":" + p.From.Phone), Value: body}
		if err := client.ProduceSync(r.Context(), record).FirstErr(); err != nil {
			w.Header().Set("Retry-After", "60")
			http.Error(w, `{"error":"not durable, retry later"}`, http.StatusServiceUnavailable)
			return
		}
		answer, _ := json.Marshal(map[string]string{"messageId": p.MessageID})
		w.Header().Set("Content-Type", "application/json")
		w.Write(answer)
	})

	server := &http.Server{Addr: *addr, Handler: mux}
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		server.Shutdown(ctx)
	}()
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

func readAll(r *http.Request) ([]byte, error) {
	if r.ContentLength > 0 {
		body := make([]byte, r.ContentLength)
		_, err := io.ReadFull(r.Body, body)
		return body, err
	}
	return io.ReadAll(r.Body)
}
