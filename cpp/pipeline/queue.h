// A blocking queue between stage threads. capacity 0 means unbounded. close() wakes every waiter;
// pop() then drains what is left and returns false once empty.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

namespace omni {

template <typename T>
class BlockingQueue {
public:
    explicit BlockingQueue(size_t capacity = 0) : capacity_(capacity) {}

    // Blocks while full. Returns false (and drops the item) if the queue is closed.
    bool push(T item) {
        std::unique_lock<std::mutex> lock(mutex_);
        not_full_.wait(lock, [&] { return closed_ || capacity_ == 0 || items_.size() < capacity_; });
        if (closed_) return false;
        items_.push_back(std::move(item));
        not_empty_.notify_one();
        return true;
    }

    // Blocks until an item arrives or the queue is closed and empty.
    std::optional<T> pop() {
        std::unique_lock<std::mutex> lock(mutex_);
        not_empty_.wait(lock, [&] { return closed_ || !items_.empty(); });
        if (items_.empty()) return std::nullopt;
        T item = std::move(items_.front());
        items_.pop_front();
        not_full_.notify_one();
        return item;
    }

    // Drops everything queued (used by stop/break); returns how many items were dropped.
    size_t clear() {
        std::lock_guard<std::mutex> lock(mutex_);
        const size_t n = items_.size();
        items_.clear();
        not_full_.notify_all();
        return n;
    }

    void close() {
        std::lock_guard<std::mutex> lock(mutex_);
        closed_ = true;
        not_empty_.notify_all();
        not_full_.notify_all();
    }

    size_t size() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return items_.size();
    }

private:
    const size_t capacity_;
    mutable std::mutex mutex_;
    std::condition_variable not_empty_;
    std::condition_variable not_full_;
    std::deque<T> items_;
    bool closed_ = false;
};

// A thread that handles the items of its own queue one at a time until close(). Declare it as its owner's last
// member: its thread starts in the constructor and may use everything declared before it.
template <typename T>
class QueueThread {
public:
    QueueThread(size_t capacity, std::function<void(T &)> handle)
        : items_(capacity), handle_(std::move(handle)), thread_([this] {
              while (auto item = items_.pop()) handle_(*item);
          }) {}
    ~QueueThread() { close(); }
    QueueThread(const QueueThread &) = delete;
    QueueThread & operator=(const QueueThread &) = delete;

    // Blocks while the queue is full; false once closed.
    bool push(T item) { return items_.push(std::move(item)); }
    // Lets the thread finish what is queued, then joins it.
    void close() {
        items_.close();
        if (thread_.joinable()) thread_.join();
    }

private:
    BlockingQueue<T> items_;
    std::function<void(T &)> handle_;
    std::thread thread_;
};

}  // namespace omni
