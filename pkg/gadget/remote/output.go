package remote

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/kdiag/kdiag/pkg/gadget/render"
	"github.com/kdiag/kdiag/pkg/gadget/wire"
)

// Writer returns an Options.Event that prints the merged stream as local
// mode does. JSON lines pass through unchanged: the agents send exactly
// what -o json prints, already labelled with their node. Table rows are
// decoded into the gadget's event type and rendered with the same
// columns as local mode.
func Writer(gadgetName string, format render.Format, w io.Writer) (func(node string, line []byte) error, error) {
	if format == render.JSON {
		return func(_ string, line []byte) error {
			if _, err := w.Write(line); err != nil {
				return err
			}
			_, err := w.Write([]byte{'\n'})
			return err
		}, nil
	}
	switch gadgetName {
	case wire.TCP:
		out := render.NewWriter(w, format, render.TCPColumns())
		return decodeTo(out.TCP), nil
	case wire.DNS:
		out := render.NewWriter(w, format, render.DNSColumns())
		return decodeTo(out.DNS), nil
	case wire.OOMKill:
		out := render.NewWriter(w, format, render.OOMKillColumns())
		return decodeTo(out.OOMKill), nil
	}
	return nil, fmt.Errorf("unknown gadget %q", gadgetName)
}

func decodeTo[E any](write func(E) error) func(string, []byte) error {
	return func(node string, line []byte) error {
		var ev E
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("%w: from node %s: %v", ErrBadEvent, node, err)
		}
		return write(ev)
	}
}
