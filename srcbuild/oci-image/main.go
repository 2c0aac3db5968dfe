// Command oci-image writes OCI image layouts (image-spec v1.1) without a
// container engine, for tests/make-images:
//
//	oci-image layer -o BLOBS -epoch N ROOTDIR
//	    packs ROOTDIR as one gzip layer into BLOBS/sha256/<digest> and prints
//	    "<digest> <diff-id> <size>";
//	oci-image image -layout DIR -ref NAME -epoch N [-entrypoint JSON]
//	    [-cmd JSON] [-env K=V]... [-label K=V]... [-user U] [-workdir W] LAYER...
//	    writes the config and manifest for the layers (each "<digest> <diff-id>
//	    <size>", as printed by `layer`) into DIR and lists the manifest in
//	    DIR/index.json under org.opencontainers.image.ref.name=NAME.
//
// Layers are deterministic: entries sorted by name, owner and group kept as
// on disk, mtimes clamped to -epoch, hard links as tar links, devices, FIFOs
// and sockets left out (the runtime provides /dev), gzip without name or time.
package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: oci-image layer|image ..."))
	}
	var err error
	switch os.Args[1] {
	case "layer":
		err = layerCmd(os.Args[2:])
	case "image":
		err = imageCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q (want layer or image)", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "oci-image:", err)
	os.Exit(1)
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

const (
	mtLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
	mtConfig   = "application/vnd.oci.image.config.v1+json"
	mtManifest = "application/vnd.oci.image.manifest.v1+json"
	mtIndex    = "application/vnd.oci.image.index.v1+json"
	refName    = "org.opencontainers.image.ref.name"
)

func layerCmd(args []string) error {
	fl := flag.NewFlagSet("layer", flag.ExitOnError)
	blobs := fl.String("o", "", "blob directory (a layout's blobs/)")
	epoch := fl.Int64("epoch", 0, "clamp mtimes to this Unix time")
	fl.Parse(args)
	if *blobs == "" || fl.NArg() != 1 {
		return errors.New("usage: oci-image layer -o BLOBS [-epoch N] ROOTDIR")
	}
	if err := os.MkdirAll(filepath.Join(*blobs, "sha256"), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(*blobs, ".layer-*")
	if err != nil {
		return fmt.Errorf("creating a temporary layer in %s: %w", *blobs, err)
	}
	defer os.Remove(tmp.Name())
	blobSum, diffSum := sha256.New(), sha256.New()
	gz, _ := gzip.NewWriterLevel(io.MultiWriter(tmp, blobSum), gzip.DefaultCompression)
	if err := packDir(io.MultiWriter(gz, diffSum), fl.Arg(0), time.Unix(*epoch, 0)); err != nil {
		return fmt.Errorf("packing %s: %w", fl.Arg(0), err)
	}
	if err := gz.Close(); err != nil {
		return err
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	digest := sum(blobSum)
	if err := os.Rename(tmp.Name(), blobPath(*blobs, digest)); err != nil {
		return err
	}
	fmt.Printf("%s %s %d\n", digest, sum(diffSum), size)
	return nil
}

func sum(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

func blobPath(blobs, digest string) string {
	return filepath.Join(blobs, "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// packDir writes root's tree as a tar stream, sorted, with clamped mtimes.
func packDir(w io.Writer, root string, epoch time.Time) error {
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{}
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		mode := fi.Mode()
		if mode&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
			continue
		}
		name, _ := filepath.Rel(root, p)
		target := ""
		if mode&fs.ModeSymlink != 0 {
			if target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return err
		}
		hdr.Name = name
		hdr.Format = tar.FormatPAX
		hdr.Uname, hdr.Gname = "", ""
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
			key := [2]uint64{st.Dev, st.Ino}
			if mode.IsRegular() && st.Nlink > 1 {
				if first, seen := links[key]; seen {
					hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
				} else {
					links[key] = name
				}
			}
		}
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.ModTime = fi.ModTime().Truncate(time.Second)
		if hdr.ModTime.After(epoch) {
			hdr.ModTime = epoch
		}
		hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("copying %s: %w", p, err)
			}
		}
	}
	return tw.Close()
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func imageCmd(args []string) error {
	fl := flag.NewFlagSet("image", flag.ExitOnError)
	layout := fl.String("layout", "", "OCI layout directory")
	ref := fl.String("ref", "", "image name for index.json (org.opencontainers.image.ref.name)")
	epoch := fl.Int64("epoch", 0, "creation time (Unix)")
	entrypoint := fl.String("entrypoint", "", "entrypoint as a JSON array")
	cmd := fl.String("cmd", "", "cmd as a JSON array")
	user := fl.String("user", "", "user")
	workdir := fl.String("workdir", "", "working directory")
	var env, labels listFlag
	fl.Var(&env, "env", "K=V (repeatable)")
	fl.Var(&labels, "label", "K=V image label (repeatable)")
	fl.Parse(args)
	if *layout == "" || *ref == "" || fl.NArg() == 0 {
		return errors.New("usage: oci-image image -layout DIR -ref NAME [flags] 'DIGEST DIFFID SIZE'...")
	}
	created := time.Unix(*epoch, 0).UTC().Format(time.RFC3339)
	cfg := map[string]any{}
	if len(env) > 0 {
		cfg["Env"] = []string(env)
	}
	for key, v := range map[string]string{"Entrypoint": *entrypoint, "Cmd": *cmd} {
		if v == "" {
			continue
		}
		var list []string
		if err := json.Unmarshal([]byte(v), &list); err != nil {
			return fmt.Errorf("-%s %q: want a JSON array of strings: %w", strings.ToLower(key), v, err)
		}
		cfg[key] = list
	}
	if *user != "" {
		cfg["User"] = *user
	}
	if *workdir != "" {
		cfg["WorkingDir"] = *workdir
	}
	if len(labels) > 0 {
		m := map[string]string{}
		for _, l := range labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				return fmt.Errorf("-label %q: want K=V", l)
			}
			m[k] = v
		}
		cfg["Labels"] = m
	}
	var layers []descriptor
	var diffIDs []string
	var history []map[string]string
	for _, l := range fl.Args() {
		f := strings.Fields(l)
		if len(f) != 3 {
			return fmt.Errorf("layer %q: want \"DIGEST DIFFID SIZE\"", l)
		}
		size, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return fmt.Errorf("layer %q: size: %w", l, err)
		}
		layers = append(layers, descriptor{MediaType: mtLayer, Digest: f[0], Size: size})
		diffIDs = append(diffIDs, f[1])
		history = append(history, map[string]string{"created": created, "created_by": "hakube tests/make-images"})
	}
	config := map[string]any{
		"created":      created,
		"architecture": "amd64",
		"os":           "linux",
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
		"history":      history,
	}
	blobs := filepath.Join(*layout, "blobs")
	cdesc, err := writeBlob(blobs, mtConfig, config)
	if err != nil {
		return err
	}
	mdesc, err := writeBlob(blobs, mtManifest, map[string]any{
		"schemaVersion": 2, "mediaType": mtManifest, "config": cdesc, "layers": layers,
	})
	if err != nil {
		return err
	}
	mdesc.Annotations = map[string]string{refName: *ref}
	if err := addToIndex(*layout, mdesc); err != nil {
		return err
	}
	fmt.Println(mdesc.Digest)
	return nil
}

func writeBlob(blobs, mediaType string, v any) (descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return descriptor{}, err
	}
	h := sha256.Sum256(data)
	d := descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(h[:]), Size: int64(len(data))}
	return d, writeAtomic(blobPath(blobs, d.Digest), data)
}

func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	return os.Rename(tmp, path)
}

// addToIndex lists m in layout/index.json, replacing an entry of the same name.
func addToIndex(layout string, m descriptor) error {
	path := filepath.Join(layout, "index.json")
	index := struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
	}{SchemaVersion: 2, MediaType: mtIndex}
	if data, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(data, &index); err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	kept := index.Manifests[:0]
	for _, d := range index.Manifests {
		if d.Annotations[refName] != m.Annotations[refName] {
			kept = append(kept, d)
		}
	}
	index.Manifests = append(kept, m)
	sort.Slice(index.Manifests, func(i, j int) bool {
		return index.Manifests[i].Annotations[refName] < index.Manifests[j].Annotations[refName]
	})
	data, err := json.MarshalIndent(index, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(layout, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	return writeAtomic(path, append(data, '\n'))
}
