package tunnel

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"
)

// Validity of the certificates GenerateCA and GenerateCert make.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	CertValidity = 2 * 365 * 24 * time.Hour
)

// GenerateKey returns a new random pre-shared key of MinKeyLen bytes.
func GenerateKey() ([]byte, error) {
	k := make([]byte, MinKeyLen)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// WriteKey writes key to a new file at path, hex-encoded, readable by its
// owner only. It refuses to overwrite an existing file.
func WriteKey(path string, key []byte) error {
	return writeNew(path, []byte(hex.EncodeToString(key)+"\n"), 0o600)
}

// LoadKey reads a pre-shared key file written by WriteKey or by hand: hex or
// base64 (standard or URL alphabet, padded or not), surrounding white space
// ignored, at least MinKeyLen bytes once decoded. Text that is valid hex is
// read as hex.
func LoadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load key: %w", err)
	}
	k, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w", path, err)
	}
	return k, nil
}

// ParseKey decodes a key as LoadKey does.
func ParseKey(text []byte) ([]byte, error) {
	s := string(bytes.TrimSpace(text))
	if s == "" {
		return nil, errors.New("empty key")
	}
	k, err := hex.DecodeString(s)
	if err != nil {
		k = nil
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if k, err = enc.DecodeString(s); err == nil {
				break
			}
		}
		if err != nil {
			return nil, errors.New("key is neither hex nor base64")
		}
	}
	if len(k) < MinKeyLen {
		return nil, fmt.Errorf("key of %d bytes, want at least %d", len(k), MinKeyLen)
	}
	return k, nil
}

// GenerateCA writes a new CA: a self-signed ECDSA P-256 certificate to
// certFile and its key to keyFile (PEM; the key readable by its owner only).
// It refuses to overwrite existing files.
func GenerateCA(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "vmigrate tunnel CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("generate CA: %w", err)
	}
	return writePair(certFile, keyFile, der, key)
}

// GenerateCert writes a certificate for name (SourceName or DestName, or
// any DNS name a peer expects), signed by the CA in caCertFile/caKeyFile,
// usable for both TLS client and server authentication. It refuses to
// overwrite existing files.
func GenerateCert(caCertFile, caKeyFile, name, certFile, keyFile string) error {
	ca, err := tls.LoadX509KeyPair(caCertFile, caKeyFile)
	if err != nil {
		return fmt.Errorf("generate certificate %s: load CA: %w", name, err)
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		return fmt.Errorf("generate certificate %s: parse CA: %w", name, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate certificate %s: %w", name, err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(CertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		return fmt.Errorf("generate certificate %s: %w", name, err)
	}
	return writePair(certFile, keyFile, der, key)
}

// LoadCerts reads certificate mode's files: the CA certificate, this end's
// certificate and key (PEM). peerName is Certs.PeerName.
func LoadCerts(caFile, certFile, keyFile, peerName string) (*Certs, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("load CA %s: no PEM certificate", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load certificate: %w", err)
	}
	return &Certs{CA: pool, Cert: cert, PeerName: peerName}, nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	return s, nil
}

func writePair(certFile, keyFile string, der []byte, key *ecdsa.PrivateKey) error {
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeNew(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		return err
	}
	return writeNew(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeNew writes data to a file that must not exist yet.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
