package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestTutorialShowsTheCode: every code block of docs/tutorial.md marked
// "<!-- code: path -->" appears verbatim in that file, part by part (a
// "// …" line between parts marks code left out), every Go block is marked,
// and every file of the service is shown: the tutorial teaches the code
// that make test compiles and tests.
func TestTutorialShowsTheCode(t *testing.T) {
	t.Parallel()
	const root = "../.."
	doc, err := os.ReadFile(filepath.Join(root, "docs", "tutorial.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)<!-- code: (\\S+) -->\n```(?:go|sql)\n(.*?)\n```").FindAllStringSubmatch(string(doc), -1)
	shown := map[string]bool{}
	for _, b := range blocks {
		path, code := b[1], b[2]
		shown[path] = true
		src, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Errorf("docs/tutorial.md shows %s: %v", path, err)
			continue
		}
		for _, part := range strings.Split(code, "\n\n// …\n\n") {
			if !strings.Contains(string(src), part) {
				t.Errorf("docs/tutorial.md shows code that is not in %s:\n%s", path, part)
			}
		}
	}
	if n := strings.Count(string(doc), "```go\n"); n != len(regexp.MustCompile("<!-- code: \\S+ -->\n```go\n").FindAllString(string(doc), -1)) {
		t.Errorf("docs/tutorial.md has %d Go blocks, not all marked with <!-- code: path -->", n)
	}
	for _, f := range []string{"card/card.go", "card/card_test.go", "readmodel/readmodel.go", "readmodel/readmodel_test.go",
		"loyalty/loyalty.go", "loyalty/migrations/001_points.up.sql", "nats.go", "main.go", "api.go"} {
		if !shown["examples/giftcard/"+f] {
			t.Errorf("docs/tutorial.md shows nothing of examples/giftcard/%s", f)
		}
	}
}
