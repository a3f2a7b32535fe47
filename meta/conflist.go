package meta

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/libcni"
)

// asConfList parses a conf or conflist and returns conflist bytes, so every delegate runs the
// same way (chained plugins and capability args included).
func asConfList(b []byte) ([]byte, string, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, "", fmt.Errorf("not JSON: %w", err)
	}
	var name string
	_ = json.Unmarshal(probe["name"], &name)
	if _, ok := probe["plugins"]; ok {
		l, err := libcni.ConfListFromBytes(b)
		if err != nil {
			return nil, "", err
		}
		if len(l.Plugins) == 0 {
			return nil, "", fmt.Errorf("conflist %q has no plugins", l.Name)
		}
		return b, l.Name, nil
	}
	var typ string
	_ = json.Unmarshal(probe["type"], &typ)
	if typ == "" {
		return nil, "", fmt.Errorf("conf %q has no type", name)
	}
	var version string
	_ = json.Unmarshal(probe["cniVersion"], &version)
	list := map[string]interface{}{"cniVersion": version, "name": name, "plugins": []json.RawMessage{b}}
	out, err := json.Marshal(list)
	if err != nil {
		return nil, "", err
	}
	if _, err := libcni.ConfListFromBytes(out); err != nil {
		return nil, "", err
	}
	return out, name, nil
}

// editPlugins applies f to each plugin object of a conflist (first == true for the main one).
func editPlugins(conflist []byte, f func(p map[string]interface{}, first bool)) ([]byte, error) {
	var l map[string]interface{}
	if err := json.Unmarshal(conflist, &l); err != nil {
		return nil, err
	}
	plugins, _ := l["plugins"].([]interface{})
	for i, p := range plugins {
		if m, ok := p.(map[string]interface{}); ok {
			f(m, i == 0)
		}
	}
	return json.Marshal(l)
}
