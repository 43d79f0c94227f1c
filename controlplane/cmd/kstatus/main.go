// Command kstatus prints the kstatus (sigs.k8s.io/cli-utils, the library Flux's
// health checks use) of each Kubernetes object read as JSON from stdin or the
// files named as arguments: one line of JSON per object.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kjson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func judge(raw []byte) (verdict, error) {
	// Kubernetes' own decoder: whole numbers become int64, as kstatus reads generations.
	var obj map[string]interface{}
	if err := kjson.Unmarshal(raw, &obj); err != nil {
		return verdict{}, fmt.Errorf("not a JSON object: %w", err)
	}
	result, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		return verdict{}, err
	}
	return verdict{Status: result.Status.String(), Message: result.Message}, nil
}

func main() {
	sources := os.Args[1:]
	if len(sources) == 0 {
		sources = []string{"-"}
	}
	encoder := json.NewEncoder(os.Stdout)
	for _, source := range sources {
		var raw []byte
		var err error
		if source == "-" {
			raw, err = io.ReadAll(os.Stdin)
		} else {
			raw, err = os.ReadFile(source)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s: %v\n", source, err)
			os.Exit(2)
		}
		result, err := judge(raw)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s: %v\n", source, err)
			os.Exit(1)
		}
		if err := encoder.Encode(result); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
			os.Exit(2)
		}
	}
}
