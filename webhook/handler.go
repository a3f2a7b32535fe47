package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MutatePath is where the API server posts AdmissionReviews.
const MutatePath = "/mutate"

// maxReview bounds a request body; the API server's own limit for an object is 3 MiB.
const maxReview = 8 << 20

// Handler serves admission/v1 AdmissionReviews for pods.
type Handler struct {
	Mutator *Mutator
	Log     *slog.Logger
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST an admission.k8s.io/v1 AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReview+1))
	if err != nil || len(body) > maxReview {
		http.Error(w, fmt.Sprintf("read AdmissionReview: %v (at most %d bytes)", err, maxReview), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, fmt.Sprintf("not an AdmissionReview with a request: %v", err), http.StatusBadRequest)
		return
	}
	resp := h.Review(review.Request)
	out, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Response: resp,
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// Review answers one admission request. It never panics: a bug denies the one pod (the
// webhook's failurePolicy would do the same) instead of killing the server for every pod.
func (h *Handler) Review(req *admissionv1.AdmissionRequest) (resp *admissionv1.AdmissionResponse) {
	log := h.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("namespace", req.Namespace, "pod", podName(req), "uid", req.UID)
	defer func() {
		if p := recover(); p != nil {
			log.Error("panic while mutating pod", "panic", p, "stack", string(debug.Stack()))
			resp = deny(req, http.StatusInternalServerError, fmt.Sprintf("multinet webhook: internal error: %v", p))
		}
	}()
	if req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create {
		return &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(req, http.StatusBadRequest, fmt.Sprintf("multinet webhook: decode pod: %v", err))
	}
	patch, err := h.Mutator.Mutate(&pod, req.Namespace)
	var d *DeniedError
	switch {
	case errors.As(err, &d):
		log.Info("pod denied", "reason", d.msg)
		return deny(req, http.StatusForbidden, "multinet webhook: "+d.msg)
	case err != nil:
		log.Error("pod not mutated", "err", err)
		return deny(req, http.StatusInternalServerError, "multinet webhook: "+err.Error())
	}
	resp = &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if len(patch) > 0 {
		b, err := json.Marshal(patch)
		if err != nil {
			return deny(req, http.StatusInternalServerError, "multinet webhook: encode patch: "+err.Error())
		}
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = b, &pt
		log.Info("pod mutated", "patch", string(b))
	}
	return resp
}

func podName(req *admissionv1.AdmissionRequest) string {
	if req.Name != "" {
		return req.Name
	}
	var m struct {
		Metadata struct {
			GenerateName string `json:"generateName"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(req.Object.Raw, &m)
	return m.Metadata.GenerateName
}

func deny(req *admissionv1.AdmissionRequest, code int32, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{UID: req.UID, Allowed: false,
		Result: &metav1.Status{Status: metav1.StatusFailure, Code: code, Message: msg}}
}
