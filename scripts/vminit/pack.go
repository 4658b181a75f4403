//go:build linux

package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// packMain writes an initramfs: the init, the named kernel modules with
// everything they depend on (decompressed, so that any kernel can load them
// with plain finit_module), and extra files.
func packMain(args []string) error {
	fl := flag.NewFlagSet("pack", flag.ContinueOnError)
	out := fl.String("o", "", "output file; gzip-compressed when it ends in .gz")
	initPath := fl.String("init", "", "binary to install as /init")
	modDir := fl.String("modules", "", "the kernel's module directory (lib/modules/VERSION)")
	var modules, files listFlag
	fl.Var(&modules, "module", "module to load at boot, with its dependencies (repeatable)")
	fl.Var(&files, "file", "DEST=SRC: add host file SRC as /DEST (repeatable)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("-o is required")
	}
	var entries []cpioEntry
	dir := func(name string) { entries = append(entries, cpioEntry{name: name, mode: 0o40755}) }
	if *initPath != "" {
		data, err := os.ReadFile(*initPath)
		if err != nil {
			return err
		}
		dir("dev")
		// The kernel opens /dev/console for init's stdin, stdout and stderr.
		entries = append(entries, cpioEntry{name: "dev/console", mode: 0o20600, rdevMajor: 5, rdevMinor: 1})
		dir("newroot")
		dir("hosttmp")
		entries = append(entries, cpioEntry{name: "init", mode: 0o100755, data: data})
	}
	if len(modules) > 0 {
		mods, err := resolveModules(*modDir, modules)
		if err != nil {
			return err
		}
		dir("modules")
		var order strings.Builder
		for _, m := range mods {
			entries = append(entries, cpioEntry{name: "modules/" + m.name + ".ko", mode: 0o100644, data: m.data})
			order.WriteString(m.name + "\n")
		}
		entries = append(entries, cpioEntry{name: "modules/order", mode: 0o100644, data: []byte(order.String())})
	}
	for _, f := range files {
		dest, src, ok := strings.Cut(f, "=")
		if !ok {
			return fmt.Errorf("-file %q: want DEST=SRC", f)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		entries = append(entries, cpioEntry{name: strings.TrimPrefix(dest, "/"), mode: 0o100644, data: data})
	}
	return writeArchive(*out, entries)
}

// writeArchive writes out next to its final name and renames it, so that a
// concurrent vm-run.sh never boots a half-written initramfs.
func writeArchive(out string, entries []cpioEntry) error {
	tmp, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriter(tmp)
	var w io.Writer = bw
	var gz *gzip.Writer
	if strings.HasSuffix(out, ".gz") {
		gz = gzip.NewWriter(bw)
		w = gz
	}
	if err := writeCpio(w, entries); err != nil {
		tmp.Close()
		return err
	}
	if gz != nil {
		if err := gz.Close(); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}

type cpioEntry struct {
	name                 string
	mode                 uint32 // file type and permission bits, as in st_mode
	rdevMajor, rdevMinor uint32
	data                 []byte
}

// writeCpio writes entries as a cpio "newc" archive, the format the kernel
// unpacks into its initial rootfs.
func writeCpio(w io.Writer, entries []cpioEntry) error {
	pad := func(n int) []byte { return make([]byte, (4-n%4)%4) }
	ino := 1
	for _, e := range append(entries, cpioEntry{name: "TRAILER!!!"}) {
		name := e.name + "\x00"
		hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, e.mode, 0, 0, 1, 0, len(e.data), 0, 0, e.rdevMajor, e.rdevMinor, len(name), 0)
		ino++
		for _, b := range [][]byte{[]byte(hdr), []byte(name), pad(len(hdr) + len(name)), e.data, pad(len(e.data))} {
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
	}
	return nil
}

type module struct {
	name string // as the kernel spells it: underscores, no suffix
	data []byte // uncompressed ELF
}

// resolveModules finds the wanted modules under dir and, through the
// "depends=" entry of each one's .modinfo, everything they need, returned in
// an order in which they can be loaded (dependencies first). The .deb ships
// no modules.dep: depmod makes it at install time.
func resolveModules(dir string, want []string) ([]module, error) {
	if dir == "" {
		return nil, errors.New("-module needs -modules")
	}
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		base := d.Name()
		for _, suffix := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
			if !d.IsDir() && strings.HasSuffix(base, suffix) {
				files[strings.ReplaceAll(strings.TrimSuffix(base, suffix), "-", "_")] = p
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list kernel modules: %w", err)
	}
	var order []module
	state := map[string]int{} // 1: being visited, 2: done
	var visit func(name string) error
	visit = func(name string) error {
		name = strings.ReplaceAll(name, "-", "_")
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		state[name] = 1
		p, ok := files[name]
		if !ok {
			return fmt.Errorf("module %s not found under %s (is it built in? then drop it)", name, dir)
		}
		data, err := readModule(p)
		if err != nil {
			return err
		}
		deps, err := moduleDepends(data)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, module{name: name, data: data})
		return nil
	}
	for _, m := range want {
		if err := visit(m); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func readModule(p string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(p, ".xz"):
		tool = "xz"
	case strings.HasSuffix(p, ".zst"):
		tool = "zstd"
	case strings.HasSuffix(p, ".gz"):
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		return io.ReadAll(zr)
	default:
		return os.ReadFile(p)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(tool, "-dc", p)
	cmd.Stderr = &stderr
	data, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("decompress %s with %s (install it: apt-get install xz-utils zstd): %w: %s", p, tool, err, stderr.Bytes())
	}
	return data, nil
}

func moduleDepends(data []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	info, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}
